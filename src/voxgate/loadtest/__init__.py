"""`voxgate loadtest`: a load generator for a running gateway, and the callers tests and benchmarks share.

Sans-IO cores (no sockets, tasks or clock reads):
    scenario.py        what callers do (speak, tool, barge-in, listen), their mix, the ramp
    conversation.py    one caller's script: the next microphone frame, latencies measured
    statistics.py      percentiles, how a call ended (completed / dropped / refused)
    report.py          call records, the timeline, the JSON report and its text summary
    carrier_line.py    the carrier's side of a media stream: Twilio/Telnyx messages, the line's playback
    carrier_webhook.py a carrier's webhooks and the gateway's answers (TwiML, Telnyx commands)
    target.py          the target URL and the loopback rule
Shells:
    driver.py          the asyncio run: ramp, calls, sampling, bounded in count and time
    realtime_caller.py / phone_caller.py   one call over the Realtime WebSocket / a carrier
    call_socket.py     the microphone clock and how a call's socket ends
    carrier_api.py     the carriers' REST APIs, stood in for on loopback
    gateway_process.py the gateway's RSS, CPU and fds from /proc
    speech.py          the caller's voice (Piper), rendered once up front
    plot.py            the PNG (matplotlib, optional extra `loadtest`)
Nothing in the gateway imports this package.
"""
