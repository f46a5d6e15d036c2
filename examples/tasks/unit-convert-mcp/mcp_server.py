#!/usr/bin/env python3
"""A tiny MCP server over stdio (JSON-RPC 2.0, one message per line), standard library only.

Tools: `convert(value, from_unit, to_unit)` for lengths and masses, `list_units()`.
Implements the subset an MCP client needs: initialize, notifications/initialized, ping,
tools/list, tools/call.
"""
import json
import sys

FACTORS = {  # to the base unit (metre, kilogram)
    "mm": 0.001, "cm": 0.01, "m": 1.0, "km": 1000.0, "in": 0.0254, "ft": 0.3048, "mi": 1609.344,
    "g": 0.001, "kg": 1.0, "lb": 0.45359237, "oz": 0.028349523125,
}
KIND = {u: ("length" if u in ("mm", "cm", "m", "km", "in", "ft", "mi") else "mass") for u in FACTORS}

TOOLS = [
    {
        "name": "convert",
        "description": "Convert a value between units of length (mm cm m km in ft mi) or mass (g kg lb oz).",
        "inputSchema": {
            "type": "object",
            "properties": {
                "value": {"type": "number"},
                "from_unit": {"type": "string"},
                "to_unit": {"type": "string"},
            },
            "required": ["value", "from_unit", "to_unit"],
            "additionalProperties": False,
        },
    },
    {
        "name": "list_units",
        "description": "List the supported units.",
        "inputSchema": {"type": "object", "properties": {}, "additionalProperties": False},
    },
]


def call(name, args):
    if name == "list_units":
        return ", ".join(sorted(FACTORS)), False
    if name == "convert":
        f, t = args.get("from_unit"), args.get("to_unit")
        if f not in FACTORS or t not in FACTORS:
            return f"unknown unit; supported: {', '.join(sorted(FACTORS))}", True
        if KIND[f] != KIND[t]:
            return f"cannot convert {KIND[f]} to {KIND[t]}", True
        v = float(args["value"]) * FACTORS[f] / FACTORS[t]
        return f"{round(v, 4):g}", False
    return f"unknown tool {name}", True


def reply(id_, result=None, error=None):
    msg = {"jsonrpc": "2.0", "id": id_}
    if error is not None:
        msg["error"] = error
    else:
        msg["result"] = result
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    try:
        req = json.loads(line)
    except json.JSONDecodeError:
        continue
    method, id_ = req.get("method"), req.get("id")
    if id_ is None:  # a notification
        continue
    if method == "initialize":
        version = req.get("params", {}).get("protocolVersion", "2024-11-05")
        reply(id_, {
            "protocolVersion": version,
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "unit-convert", "version": "1.0"},
        })
    elif method == "ping":
        reply(id_, {})
    elif method == "tools/list":
        reply(id_, {"tools": TOOLS})
    elif method == "tools/call":
        p = req.get("params", {})
        text, is_error = call(p.get("name"), p.get("arguments") or {})
        reply(id_, {"content": [{"type": "text", "text": text}], "isError": is_error})
    else:
        reply(id_, error={"code": -32601, "message": f"method not found: {method}"})
