"""voxgate's own WebRTC media stack for browser calls: ICE (aioice), DTLS-SRTP, SCTP data channels."""
