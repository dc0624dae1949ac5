"""A user's own agent behind the webhook backend, written independently of the relay.

It verifies X-WeCom-Relay-Signature (t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">) with
Python's hmac module, refuses bad or stale signatures with 401, and answers by the text:
  "later: ..."  -> 202, then a second later POSTs the answer to the relay's /api/send
                   (to the user, or to the AI bot's stream when the event names one)
  "many: ..."   -> {"replies": ["first of many", "second of many"]}
  "attach: URL" -> {"reply": "here it is", "attachments": [{"url": URL, "type": "image",
                   "name": "chart.png"}, {"base64": <a small text file>, "name": "notes.txt"}]}
  anything else -> {"reply": "webhook got: <text>"}
Usage: webhook_receiver.py SECRET API_TOKEN. Prints its port, then serves.
POST /config {"send_url": "..."} tells it where the relay's /api/send is (the relay starts
after the receiver, so it can be given the receiver's port).
GET /stats answers {"verified": n, "rejected": n, "events": [...]}.
"""
import base64
import hashlib
import hmac
import json
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET, API_TOKEN = sys.argv[1].encode(), sys.argv[2]
CONFIG = {"send_url": None}
STATS = {"verified": 0, "rejected": 0, "events": []}
LOCK = threading.Lock()


def valid(header, body):
    parts = dict(p.strip().split("=", 1) for p in header.split(",") if "=" in p)
    try:
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - t) > 300:
        return False
    expected = hmac.new(SECRET, str(t).encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))


def answer_later(event):
    time.sleep(1)
    answer = "later reply to " + event["text"]
    # An AI bot's message names its stream: the answer goes there.
    if event.get("stream"):
        order = {"stream": event["stream"], "markdown": answer}
    else:
        order = {"to": event["user"], "text": answer}
    req = urllib.request.Request(
        CONFIG["send_url"],
        data=json.dumps(order).encode(),
        headers={"Authorization": "Bearer " + API_TOKEN, "Content-Type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(req, timeout=10).read()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, payload=None):
        body = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        with LOCK:
            self.reply(200, STATS)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/config":
            CONFIG["send_url"] = json.loads(body)["send_url"]
            return self.reply(204)
        if not valid(self.headers.get("X-WeCom-Relay-Signature", ""), body):
            with LOCK:
                STATS["rejected"] += 1
            return self.reply(401, {"error": "bad signature"})
        event = json.loads(body)
        with LOCK:
            STATS["verified"] += 1
            STATS["events"].append(event)
        text = event["text"]
        if event["event"] == "feedback":
            return self.reply(200, {})
        if text.startswith("later:"):
            threading.Thread(target=answer_later, args=(event,), daemon=True).start()
            return self.reply(202)
        if text.startswith("attach:"):
            notes = base64.b64encode("notes from the webhook\n".encode()).decode()
            return self.reply(200, {"reply": "here it is", "attachments": [
                {"url": text[len("attach:"):].strip(), "type": "image", "name": "chart.png"},
                {"base64": notes, "mime": "text/plain", "name": "notes.txt"},
            ]})
        if text.startswith("many:"):
            return self.reply(200, {"replies": ["first of many", "second of many"]})
        return self.reply(200, {"reply": "webhook got: " + text})


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
