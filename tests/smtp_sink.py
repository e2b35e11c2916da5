#!/usr/bin/env python3
"""A tiny SMTP sink for the corebank email tests.

    python3 tests/smtp_sink.py PORT DIR [--reject-rcpt SUBSTRING]... [--exit-on-stdin-eof]

Listens on 127.0.0.1:PORT (plain SMTP, no auth, no TLS) and writes every
message it accepts to DIR as its own `.eml` file: first to a hidden temporary
name, then renamed, so a reader never sees half a file. Each file is the
message exactly as received, preceded by one `X-Envelope-To:` header line
listing the envelope recipients (RCPT TO), and `X-Envelope-From:`.

`--reject-rcpt SUBSTRING` answers `550 mailbox unavailable` to every RCPT TO
whose address contains SUBSTRING (case-insensitive), the way a real server
rejects an unknown mailbox: a permanent failure. May be given several times.

`--exit-on-stdin-eof` exits when standard input reaches end-of-file, so that
the sink dies with the test process that started it even when that process
is killed without cleaning up.

Prints `READY` on stdout (flushed) once it accepts connections, then runs
until killed. Exits non-zero with a message on stderr when aiosmtpd is
missing or the port cannot be bound.
"""

import argparse
import os
import signal
import sys
import threading
import time
import uuid

try:
    from aiosmtpd.controller import Controller
except ImportError as error:  # pragma: no cover - environment problem
    sys.stderr.write(
        "smtp_sink: the Python package aiosmtpd is missing ({}); install it with "
        "`python3 -m pip install aiosmtpd` or run scripts/services.sh\n".format(error)
    )
    sys.exit(3)


class SinkHandler:
    def __init__(self, directory, reject):
        self.directory = directory
        self.reject = [r.lower() for r in reject]
        self.count = 0
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        lowered = address.lower()
        if any(r in lowered for r in self.reject):
            sys.stderr.write("smtp_sink: rejected RCPT TO:<{}>\n".format(address))
            sys.stderr.flush()
            return "550 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        content = envelope.original_content or b""
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        prefix = "X-Envelope-From: {}\r\nX-Envelope-To: {}\r\n".format(
            envelope.mail_from or "", ", ".join(envelope.rcpt_tos)
        ).encode("utf-8", "surrogateescape")
        with self.lock:
            self.count += 1
            seq = self.count
        name = "{:.6f}-{:06d}-{}".format(time.time(), seq, uuid.uuid4().hex[:8])
        tmp = os.path.join(self.directory, ".{}.tmp".format(name))
        final = os.path.join(self.directory, "{}.eml".format(name))
        with open(tmp, "wb") as f:
            f.write(prefix)
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, final)
        sys.stderr.write(
            "smtp_sink: stored {} for {}\n".format(os.path.basename(final), envelope.rcpt_tos)
        )
        sys.stderr.flush()
        return "250 Message accepted for delivery"


def main():
    parser = argparse.ArgumentParser(description="SMTP sink for the corebank tests")
    parser.add_argument("port", type=int)
    parser.add_argument("directory")
    parser.add_argument("--reject-rcpt", action="append", default=[], metavar="SUBSTRING")
    parser.add_argument("--exit-on-stdin-eof", action="store_true")
    args = parser.parse_args()

    os.makedirs(args.directory, exist_ok=True)
    handler = SinkHandler(args.directory, args.reject_rcpt)
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=args.port,
        decode_data=False,
        enable_SMTPUTF8=True,
        ready_timeout=10.0,
    )
    try:
        controller.start()
    except Exception as error:  # bind failure, timeout
        sys.stderr.write(
            "smtp_sink: cannot listen on 127.0.0.1:{}: {!r}\n".format(args.port, error)
        )
        sys.stderr.flush()
        os._exit(2)

    sys.stdout.write("READY\n")
    sys.stdout.flush()

    def stop(*_):
        try:
            controller.stop()
        finally:
            os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    if args.exit_on_stdin_eof:
        # Blocks until the parent closes the pipe or dies.
        while sys.stdin.buffer.read(4096):
            pass
        stop()
    else:
        while True:
            signal.pause()


if __name__ == "__main__":
    main()
