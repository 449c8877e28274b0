"""`/dashboard`: the operators' page. The page itself holds no data: everything it shows comes from the
operators' API with the operator's API key (typed in, or passed in the link's fragment, which no server
ever sees), the same auth as every other route."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from voxgate.web.console import STATIC_DIR

# The page may load scripts and styles from this gateway only: no CDN at run time, nothing inline.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                           "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'")


async def dashboard_page(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "dashboard.html", headers={
        "Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer"})
