"""SIP and RTP, sans-IO: the protocol cores of voxgate's phone-system door.

Every module here is a pure core in h11's shape: bytes and typed values in, typed values and bytes out,
time passed in by the caller (`now`, seconds on any monotonic clock). Nothing reads a socket or a clock,
so every rule is tested without an event loop and every parser is fuzzed.

    errors.py       SipError, the root of every core's typed error (each carries a stable `code`)
    uri.py          sip:/sips:/tel: URIs (RFC 3261 §19, RFC 3966)
    headers.py      typed header values: Via, name-addr (From/To/Contact/Route), CSeq, parameters
    message.py      requests and responses: parse, serialise, stream framing, bounds, typed errors
    transaction.py  client and server transactions with the RFC 3261 timers (A-K) and retransmission
    dialog.py       dialog state (tags, route set, CSeq), in-dialog requests, 2xx retransmission until ACK
    session_timer.py  RFC 4028 Session-Expires negotiation
    refer.py        REFER and its NOTIFY (RFC 3515): Refer-To, message/sipfrag
    digest.py       digest authentication (RFC 7616/8760: MD5 and SHA-256) for both sides
    sdp.py          SDP offer/answer (RFC 3264/8866): PCMU, PCMA, telephone-event, Opus, hold
    sdes.py         SDES-SRTP crypto attributes (RFC 4568)
    srtp.py         SRTP/SRTCP protection of one call's packets (RFC 3711, through pylibsrtp)
    rtp.py          RTP packets (RFC 3550) and the sender's sequence/timestamp/SSRC state
    dtmf.py         telephone-event payloads (RFC 4733) both ways, and SIP INFO dtmf-relay bodies
    jitter.py       a small adaptive jitter buffer for received RTP
    rtcp.py         RTCP sender and receiver reports, the reception statistics behind them, and one
                    call's reporting (when to report, what the peer's reports say)
    endpoint.py     the thin asyncio shell: UDP and TCP, OPTIONS answered, calls handed to its user
"""
