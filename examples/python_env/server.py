#!/usr/bin/env python3
"""An enact remote environment in plain Python (standard library only).

It speaks the enact wire protocol `enact-env/1` (docs/remote-protocol.md) over HTTP+JSON,
so enact can train and evaluate agents in it:

    python3 examples/python_env/server.py --port 8765
    enact eval --env remote:http://127.0.0.1:8765/guess --model scripted -n 5

The suite `guess`: the agent finds a secret number between 1 and 100 with a `guess` tool
that answers "higher", "lower" or "correct", then replies with the number. The secret is
derived from the task id and a salt that only this server knows (hidden data never leaves
the server); grading happens here too. The reference solution is a binary search.

With `--port 0` the server picks a free port. Its first line on stdout is always
`listening on http://HOST:PORT`.
"""
import argparse
import hashlib
import json
import random
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

PROTOCOL = "enact-env/1"
SALT = "enact-python-example-salt"  # the hidden data: without it, secrets can't be derived
LOW, HIGH, MAX_GUESSES = 1, 100, 7

GUESS_TOOL = {
    "name": "guess",
    "description": f"Guess the secret number ({LOW}-{HIGH}). Answers higher, lower or correct.",
    "parameters": {
        "type": "object",
        "properties": {"number": {"type": "integer", "minimum": LOW, "maximum": HIGH}},
        "required": ["number"],
        "additionalProperties": False,
    },
}


def secret_of(task_id):
    digest = hashlib.sha256(f"{SALT}:{task_id}".encode()).digest()
    return LOW + int.from_bytes(digest[:8], "big") % (HIGH - LOW + 1)


def make_tasks(split, n, seed):
    rng = random.Random(f"{split}:{seed}")
    return [
        {
            "id": f"guess-{split}-{seed}-{i}-{rng.randrange(1 << 30)}",
            "prompt": f"I am thinking of a whole number between {LOW} and {HIGH}. Find it with the guess tool "
            f"(at most {MAX_GUESSES} guesses), then reply with the number only.",
            "env": {"kind": "guess"},
            "split": split,
        }
        for i in range(n)
    ]


def tool_call(name, arguments):
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"


def reference_turns(task):
    secret, lo, hi, turns = secret_of(task["id"]), LOW, HIGH, []
    while True:
        mid = (lo + hi) // 2
        turns.append(tool_call("guess", {"number": mid}))
        if mid == secret:
            break
        if mid < secret:
            lo = mid + 1
        else:
            hi = mid - 1
    turns.append(str(secret))
    return turns


class Episode:
    """One environment session."""

    def __init__(self):
        self.task = None
        self.secret = None
        self.guesses = []
        self.found = False
        self.final_answer = None
        self.messages = []
        self.lock = threading.Lock()

    def reset(self, task):
        self.task, self.secret = task, secret_of(task["id"])
        self.guesses, self.found, self.final_answer = [], False, None
        self.messages = [
            {"role": "system", "content": "You are playing a guessing game. Use the tools."},
            {"role": "user", "content": task["prompt"]},
        ]
        return {"messages": list(self.messages), "tools": [GUESS_TOOL]}

    def step(self, action):
        if self.task is None:
            raise ProtocolError(409, "not_reset", "reset the environment first")
        if action.get("type") == "message":
            self.final_answer = action.get("content", "")
            self.messages.append({"role": "assistant", "content": self.final_answer})
            return {"type": "done"}
        if action.get("type") != "tool_call":
            raise ProtocolError(400, "bad_request", "action.type must be tool_call or message")
        call_id, name, args = action.get("id", ""), action.get("name"), action.get("arguments")

        def result(content, is_error=False):
            self.messages.append({"role": "tool", "content": content, "tool_call_id": call_id, "name": name})
            return {"type": "tool_result", "call_id": call_id, "name": name, "content": content, "is_error": is_error}

        if name != "guess":
            return result(f'error: unknown tool "{name}". Available tools: guess.', True)
        number = args.get("number") if isinstance(args, dict) else None
        if not isinstance(number, int) or isinstance(number, bool) or not LOW <= number <= HIGH:
            return result(f"error: invalid arguments: number must be a whole number from {LOW} to {HIGH}", True)
        self.guesses.append(number)
        if number == self.secret:
            self.found = True
            return result(f"correct! the number is {number}")
        return result("higher" if number < self.secret else "lower")

    def submission(self):
        return {
            "final_answer": self.final_answer,
            "state": {"guesses": self.guesses},
            "messages": list(self.messages),
        }

    def verify(self):
        if self.task is None:
            raise ProtocolError(409, "not_reset", "reset the environment first")
        answer = (self.final_answer or "").strip().rstrip(".")
        checks = [
            ("answer_correct", answer == str(self.secret), f"answered {answer!r}"),
            ("found_by_guessing", self.found, "no guess was correct"),
            ("within_limit", 0 < len(self.guesses) <= MAX_GUESSES, f"{len(self.guesses)} guesses"),
        ]
        results = [
            {"name": n, "status": "passed" if ok else "failed", "detail": "" if ok else d} for n, ok, d in checks
        ]
        passed = sum(1 for r in results if r["status"] == "passed")
        return {
            "reward": 1.0 if passed == len(results) else 0.0,
            "components": {},
            "progress": passed / len(results),
            "checks": results,
            "flags": [],
        }


class ProtocolError(Exception):
    def __init__(self, status, kind, message):
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


SESSIONS = {}
SESSIONS_LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def send_json(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def read_json(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        try:
            return json.loads(raw or b"{}")
        except json.JSONDecodeError as e:
            raise ProtocolError(400, "bad_request", f"body is not JSON: {e}")

    def session(self, sid):
        with SESSIONS_LOCK:
            if sid not in SESSIONS:
                raise ProtocolError(404, "not_found", f'no session "{sid}"')
            return SESSIONS[sid]

    def handle_any(self, method):
        try:
            url = urlparse(self.path)
            parts = [p for p in url.path.split("/") if p]
            body = self.read_json() if method == "POST" else None
            self.send_json(200, self.route(method, parts, parse_qs(url.query), body))
        except ProtocolError as e:
            self.send_json(e.status, {"error": {"kind": e.kind, "message": e.message}})
        except Exception as e:  # never crash the server on a bad request
            self.send_json(500, {"error": {"kind": "env", "message": repr(e)}})

    def route(self, method, parts, query, body):
        if parts[:1] != ["v1"]:
            raise ProtocolError(404, "not_found", "unknown path")
        p = parts[1:]
        if method == "GET" and p == ["health"]:
            return {"status": "ok", "protocol": PROTOCOL, "suites": ["guess"]}
        if method == "GET" and p == ["suites"]:
            return [{"name": "guess", "description": "find a secret number with higher/lower feedback (Python)"}]
        if method == "GET" and p == ["tasks"]:
            suite = query.get("suite", ["guess"])[0]
            if suite != "guess":
                raise ProtocolError(404, "not_found", f'unknown suite "{suite}"; this server has: guess')
            split = query.get("split", ["test"])[0]
            n, seed = int(query.get("n", ["20"])[0]), int(query.get("seed", ["0"])[0])
            return {"tasks": make_tasks(split, min(n, 10000), seed)}
        if method == "POST" and p == ["reference"]:
            return {"turns": reference_turns(body["task"])}
        if method == "POST" and p == ["envs"]:
            if body.get("suite") != "guess":
                raise ProtocolError(404, "not_found", f'unknown suite "{body.get("suite")}"; this server has: guess')
            sid = uuid.uuid4().hex
            with SESSIONS_LOCK:
                SESSIONS[sid] = Episode()
            return {"id": sid}
        if len(p) >= 2 and p[0] == "envs":
            sid = p[1]
            if method == "DELETE" and len(p) == 2:
                with SESSIONS_LOCK:
                    return {"closed": SESSIONS.pop(sid, None) is not None}
            ep = self.session(sid)
            with ep.lock:
                if method == "POST" and p[2:] == ["reset"]:
                    return ep.reset(body["task"])
                if method == "POST" and p[2:] == ["step"]:
                    return ep.step(body["action"])
                if method == "POST" and p[2:] == ["submission"]:
                    return ep.submission()
                if method == "POST" and p[2:] == ["verify"]:
                    return ep.verify()
        raise ProtocolError(404, "not_found", f"no route {method} /{'/'.join(parts)}")

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_DELETE(self):
        self.handle_any("DELETE")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    args = ap.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    host, port = server.server_address[:2]
    print(f"listening on http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    server.server_close()


if __name__ == "__main__":
    sys.exit(main())
