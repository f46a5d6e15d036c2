#!/usr/bin/env python3
"""Generates the golden fixtures of enact-model's template and tokenizer tests.

The expected outputs come from Hugging Face itself: chat templates are rendered with
transformers' `apply_chat_template(..., tokenize=False)` (its own Jinja environment), and
SmolLM2 tokenizations with the Python `tokenizers` library on a tokenizer built here, in Python,
from the GGUF metadata (independently of the Rust code that does the same).

Setup (any machine with PyPI; no model hub needed):
    python3 -m venv /tmp/hfvenv && /tmp/hfvenv/bin/pip install transformers jinja2 tokenizers gguf
    /tmp/hfvenv/bin/python scripts/gen_model_fixtures.py \
        [--gguf ~/.cache/enact/models/SmolLM2-135M-Instruct.Q4_1.gguf] [--shared ../shared]

Writes, under crates/enact-model/tests/fixtures/:
    templates/qwen3.jinja, templates/qwen3_2507.jinja   (copied byte-exact from shared/reference/qwen3)
    templates/smollm2.jinja                             (tokenizer.chat_template of the GGUF)
    templates/qwen3_thinking_2507.jinja                 (derived: qwen3_2507 with the thinking-only
                                                         generation prompt `<|im_start|>assistant\n<think>\n`
                                                         of Qwen3-*-Thinking-2507, which opens every thought)
    template_cases.json                                 (inputs + expected renderings)
    smollm2_tokenize.json                               (texts + expected ids; needs --gguf)
Without --gguf/--shared the template files already in the fixtures directory are used.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "crates", "enact-model", "tests", "fixtures")
TEMPLATES = os.path.join(FIXTURES, "templates")

# Special tokens each template is rendered with (as the models' tokenizer configs declare them).
SPECIALS = {
    "qwen3": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    "qwen3_2507": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    "qwen3_thinking_2507": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    "smollm2": {
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|im_end|>",
    },
}


# ---------------------------------------------------------------------------------------------
# Inputs, in enact's Message / ToolSpec JSON form (crates/enact-core/src/message.rs).

def msg(role, content="", reasoning=None, tool_calls=None, tool_call_id=None, name=None):
    m = {"role": role, "content": content}
    if reasoning is not None:
        m["reasoning"] = reasoning
    if tool_calls:
        m["tool_calls"] = tool_calls
    if tool_call_id is not None:
        m["tool_call_id"] = tool_call_id
    if name is not None:
        m["name"] = name
    return m


def call(id, name, arguments):
    return {"id": id, "name": name, "arguments": arguments}


def to_hf(m):
    """enact_core::Message::to_hf_json, replicated."""
    out = {"role": m["role"], "content": m.get("content", "")}
    if m.get("reasoning") is not None:
        out["reasoning_content"] = m["reasoning"]
    if m.get("tool_calls"):
        out["tool_calls"] = [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for c in m["tool_calls"]
        ]
    if m.get("tool_call_id") is not None:
        out["tool_call_id"] = m["tool_call_id"]
    if m.get("name") is not None:
        out["name"] = m["name"]
    return out


def tool_to_openai(t):
    """enact_core::ToolSpec::to_openai_json, replicated."""
    return {"type": "function", "function": {"name": t["name"], "description": t["description"], "parameters": t["parameters"]}}


CALC = {
    "name": "calculator",
    "description": "Evaluate an arithmetic expression, e.g. \"2 + 2\".",
    "parameters": {
        "type": "object",
        "properties": {"expression": {"type": "string", "description": "The expression."}},
        "required": ["expression"],
    },
}
WEATHER = {
    "name": "get_weather",
    "description": "Météo — the weather for a <city>; returns JSON & text.",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["c", "f"], "default": "c"},
            "days": {"type": "integer", "minimum": 1, "maximum": 7.5},
        },
        "required": ["city"],
    },
}
TOOLS = [CALC, WEATHER]

SYS = "You are a careful assistant."
Q = "What is 2+2?"


def cases():
    c = []

    def add(name, messages, tools=None, gen=True, thinking=None, hf=False):
        c.append({"name": name, "messages": messages, "tools": tools or [], "add_generation_prompt": gen,
                  "enable_thinking": thinking, "hf": hf})

    add("plain_user", [msg("user", "Hello!")])
    add("plain_user_no_gen", [msg("user", "Hello!")], gen=False)
    add("plain_user_thinking_false", [msg("user", "Hello!")], thinking=False)
    add("plain_user_thinking_true", [msg("user", "Hello!")], thinking=True)
    add("system_user", [msg("system", SYS), msg("user", Q)])
    add("multi_turn_plain", [msg("system", SYS), msg("user", "Hi"), msg("assistant", "Hello there."),
                             msg("user", "How are you?")])
    add("tools_no_system", [msg("user", Q)], tools=TOOLS)
    add("tools_with_system", [msg("system", SYS), msg("user", Q)], tools=TOOLS)
    add("tools_with_system_thinking_false", [msg("system", SYS), msg("user", Q)], tools=TOOLS, thinking=False)
    one = [msg("user", Q), msg("assistant", "", tool_calls=[call("call_1_0", "calculator", {"expression": "2+2"})]),
           msg("tool", "4", tool_call_id="call_1_0", name="calculator")]
    add("single_tool_call", one, tools=TOOLS)
    add("single_tool_call_with_content",
        [msg("user", Q), msg("assistant", "Let me compute that.",
                             tool_calls=[call("c0", "calculator", {"expression": "2+2"})]),
         msg("tool", "4", tool_call_id="c0", name="calculator")], tools=TOOLS)
    par = [msg("user", "Weather in Paris and 3*7?"),
           msg("assistant", "", tool_calls=[call("a", "get_weather", {"city": "Paris", "unit": "c"}),
                                            call("b", "calculator", {"expression": "3*7"})]),
           msg("tool", "{\"temp\": 21, \"sky\": \"clear\"}", tool_call_id="a", name="get_weather"),
           msg("tool", "21", tool_call_id="b", name="calculator")]
    add("parallel_tool_calls", par, tools=TOOLS)
    add("parallel_tool_calls_then_answer", par + [msg("assistant", "Paris is clear at 21°C; 3*7 = 21.")],
        tools=TOOLS, gen=False)
    add("reasoning_multi_step",
        [msg("user", Q),
         msg("assistant", "", reasoning="I should use the calculator.",
             tool_calls=[call("c0", "calculator", {"expression": "2+2"})]),
         msg("tool", "4", tool_call_id="c0", name="calculator"),
         msg("assistant", "2+2 = 4.", reasoning="The tool said 4.")], tools=TOOLS, gen=False)
    add("reasoning_multi_step_gen",
        [msg("user", Q),
         msg("assistant", "", reasoning="I should use the calculator.",
             tool_calls=[call("c0", "calculator", {"expression": "2+2"})]),
         msg("tool", "4", tool_call_id="c0", name="calculator")], tools=TOOLS)
    add("reasoning_in_content",
        [msg("user", Q), msg("assistant", "<think>\nSimple sum.\n</think>\n\nThe answer is 4.")], gen=False)
    add("reasoning_in_content_no_open_tag",
        [msg("user", Q), msg("assistant", "Simple sum.\n</think>\n\nThe answer is 4.")], gen=False)
    hist = [msg("user", "First question?"), msg("assistant", "First answer.", reasoning="First thoughts."),
            msg("user", "Second question?"), msg("assistant", "Second answer.", reasoning="Second thoughts.")]
    add("reasoning_history_new_user", hist + [msg("user", "Third question?")])
    add("reasoning_history_new_user_thinking_false", hist + [msg("user", "Third question?")], thinking=False)
    add("reasoning_history_last_assistant", hist, gen=False)
    add("empty_reasoning_last_assistant", [msg("user", "Hi"), msg("assistant", "Hello.")], gen=False)
    add("user_like_tool_response",
        [msg("user", "Real question"), msg("assistant", "ok", reasoning="r1"),
         msg("user", "<tool_response>\nfake\n</tool_response>"), msg("assistant", "done", reasoning="r2")],
        gen=False)
    add("non_ascii",
        [msg("system", "Réponds en français. 日本語も OK."),
         msg("user", "Grüße! 你好，世界 🌍 — «quotes» \"double\" 'single' \\backslash\ttab"),
         msg("assistant", "", tool_calls=[call("u", "get_weather", {
             "city": "Zürich", "note": "naïve café ☕ \"q\" \\ \n", "nested": {"z": 1, "a": [1, 2.5, 1e-07, True, None]},
             "big": 12345678901234, "neg": -0.5, "exp": 1e20})]),
         msg("tool", "Température: 3 °C ❄", tool_call_id="u", name="get_weather")], tools=TOOLS)
    add("empty_arguments",
        [msg("user", "Ping"), msg("assistant", "", tool_calls=[call("p", "calculator", {})]),
         msg("tool", "", tool_call_id="p", name="calculator")], tools=[CALC])
    add("system_only_with_tools", [msg("system", SYS)], tools=[CALC])
    add("system_in_the_middle", [msg("user", "a"), msg("system", "Be brief."), msg("user", "b")])
    # Thinking control: soft switches, a thought closed by a budget's stop text, reasoning
    # interleaved with tool calls (kept after the last user query), with and without the
    # hard switch.
    add("soft_switch_no_think", [msg("user", Q + " /no_think")])
    add("soft_switch_history",
        [msg("user", Q + " /no_think"), msg("assistant", "4."),
         msg("user", "Now show your work. /think")])
    stop = ("Considering the limited time by the user, I have to give the solution based on the "
            "thinking directly now.")
    add("budget_stop_text_in_reasoning",
        [msg("user", Q), msg("assistant", "", reasoning="Two plus two, let me see\n\n" + stop,
                             tool_calls=[call("c0", "calculator", {"expression": "2+2"})]),
         msg("tool", "4", tool_call_id="c0", name="calculator")], tools=TOOLS)
    inter = [msg("user", "Weather in Paris, then 3*7?"),
             msg("assistant", "", reasoning="First the weather.",
                 tool_calls=[call("a", "get_weather", {"city": "Paris"})]),
             msg("tool", "{\"temp\": 21}", tool_call_id="a", name="get_weather"),
             msg("assistant", "", reasoning="Now the product.",
                 tool_calls=[call("b", "calculator", {"expression": "3*7"})]),
             msg("tool", "21", tool_call_id="b", name="calculator")]
    add("interleaved_thinking_tool_calls", inter, tools=TOOLS)
    add("interleaved_thinking_tool_calls_thinking_false", inter, tools=TOOLS, thinking=False)
    add("interleaved_thinking_then_answer",
        inter + [msg("assistant", "Paris is 21°C; 3*7 = 21.", reasoning="Both known.")], tools=TOOLS, gen=False)
    # Raw Hugging Face form: content null (dropped), arguments as a JSON string, reasoning alias.
    add("hf_raw_string_arguments",
        [{"role": "user", "content": "Add 1 and 1"},
         {"role": "assistant", "content": "", "tool_calls": [
             {"type": "function", "function": {"name": "calculator", "arguments": "{\"expression\": \"1+1\"}"}}]},
         {"role": "tool", "content": "2"},
         {"role": "assistant", "content": "It is 2.", "reasoning": "aliased reasoning"}],
        tools=[tool_to_openai(CALC)], gen=False, hf=True)
    add("hf_raw_null_content",
        [{"role": "user", "content": "Add"},
         {"role": "assistant", "content": None, "tool_calls": [
             {"type": "function", "function": {"name": "calculator", "arguments": {"expression": "1+1"}}}]},
         {"role": "tool", "content": "2"}],
        tools=[tool_to_openai(CALC)], hf=True)
    return c


# ---------------------------------------------------------------------------------------------

def load_templates(args):
    os.makedirs(TEMPLATES, exist_ok=True)
    if args.shared:
        ref = os.path.join(args.shared, "reference", "qwen3")
        shutil.copyfile(os.path.join(ref, "qwen3_chat_template.jinja"), os.path.join(TEMPLATES, "qwen3.jinja"))
        shutil.copyfile(os.path.join(ref, "qwen3_2507_chat_template.jinja"),
                        os.path.join(TEMPLATES, "qwen3_2507.jinja"))
    if args.gguf:
        from gguf import GGUFReader
        r = GGUFReader(args.gguf)
        tmpl = r.fields["tokenizer.chat_template"].contents()
        with open(os.path.join(TEMPLATES, "smollm2.jinja"), "w", encoding="utf-8", newline="") as f:
            f.write(tmpl)
    out = {}
    for name in ("qwen3", "qwen3_2507", "smollm2"):
        with open(os.path.join(TEMPLATES, name + ".jinja"), encoding="utf-8", newline="") as f:
            out[name] = f.read()
    # Thinking-only (Qwen3-Thinking-2507): the generation prompt opens the thought.
    instruct_gen = "'<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n'"
    assert instruct_gen in out["qwen3_2507"], "qwen3_2507's generation prompt moved"
    thinking = out["qwen3_2507"].replace(instruct_gen, "'<|im_start|>assistant\\n<think>\\n'")
    with open(os.path.join(TEMPLATES, "qwen3_thinking_2507.jinja"), "w", encoding="utf-8", newline="") as f:
        f.write(thinking)
    out["qwen3_thinking_2507"] = thinking
    return out


def hf_tokenizer_for(specials):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast
    backend = Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=backend, **specials)


def render_cases(templates):
    import transformers
    out = []
    for tname, source in templates.items():
        tok = hf_tokenizer_for(SPECIALS[tname])
        variables = dict(tok.special_tokens_map)
        for case in cases():
            if case["hf"]:
                messages, tools = case["messages"], case["tools"] or None
            else:
                messages = [to_hf(m) for m in case["messages"]]
                tools = [tool_to_openai(t) for t in case["tools"]] or None
            kwargs = {}
            if case["enable_thinking"] is not None:
                kwargs["enable_thinking"] = case["enable_thinking"]
            entry = {
                "template": tname,
                "name": case["name"],
                "variables": variables,
                ("hf_messages" if case["hf"] else "messages"): case["messages"],
                ("hf_tools" if case["hf"] else "tools"): case["tools"],
                "add_generation_prompt": case["add_generation_prompt"],
                "enable_thinking": case["enable_thinking"],
            }
            try:
                entry["expected"] = tok.apply_chat_template(
                    messages, tools=tools, chat_template=source, tokenize=False,
                    add_generation_prompt=case["add_generation_prompt"], **kwargs)
            except Exception as e:  # the template refuses the input: Rust must refuse it too
                entry["expected_error"] = f"{type(e).__name__}: {e}"
            out.append(entry)
    return {"generator": "scripts/gen_model_fixtures.py", "transformers": transformers.__version__, "cases": out}


# ---------------------------------------------------------------------------------------------
# SmolLM2 tokenizer from GGUF metadata, built independently of the Rust code.

def smollm2_tokenizer(path):
    from gguf import GGUFReader
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    r = GGUFReader(path)
    f = r.fields
    assert f["tokenizer.ggml.model"].contents() == "gpt2"
    assert f["tokenizer.ggml.pre"].contents() == "smollm"
    tokens = f["tokenizer.ggml.tokens"].contents()
    types = f["tokenizer.ggml.token_type"].contents()
    merges = [tuple(m.split(" ", 1)) for m in f["tokenizer.ggml.merges"].contents()]
    vocab = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    # llama.cpp's "smollm" pre-tokenizer: digits one by one, then GPT-2's regex split.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True),
         pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types) if ty == 3])
    user = [AddedToken(t, special=False, normalized=False) for t, ty in zip(tokens, types) if ty == 4]
    if user:
        tok.add_tokens(user)
    return tok


TEXTS = [
    "Hello, world!",
    "The year 2024 had 366 days; pi is 3.14159 and 1,000,000 is a million.",
    "don't I'll we've they're it's",
    "  leading spaces and trailing   ",
    "tabs\tand\nnewlines\n\n\nand\r\nCRLF",
    "def f(x):\n    return x ** 2  # square\n",
    "Grüße aus Zürich — naïve café ☕",
    "你好，世界！日本語のテキスト。한국어",
    "emoji 🌍🚀👍🏽 and symbols ∑∫√ ≠ ≤",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<tool_call>\n{\"name\": \"calculator\", \"arguments\": {\"expression\": \"2+2\"}}\n</tool_call>",
    "text<|im_end|>glued<|endoftext|>specials <|im_start|> spaced",
    "<think>\nreasoning\n</think>\n\nanswer",
    "",
    " ",
    "\n",
    "a" * 300,
    "0123456789 00 007 9.99e-10",
    "https://example.com/path?q=1&r=two#frag",
    "MixedCASE camelCase snake_case SCREAMING_CASE",
]


def tokenize_cases(path, rendered):
    tok = smollm2_tokenizer(path)
    with open(path, "rb") as fh:
        sha = hashlib.sha256(fh.read()).hexdigest()
    texts = TEXTS + rendered
    return {
        "generator": "scripts/gen_model_fixtures.py",
        "gguf_sha256": sha,
        "vocab_size": tok.get_vocab_size(with_added_tokens=True),
        "cases": [{"text": t, "ids": tok.encode(t, add_special_tokens=False).ids} for t in texts],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", help="SmolLM2-135M-Instruct.Q4_1.gguf (for smollm2.jinja and tokenization)")
    ap.add_argument("--shared", help="the shared/ directory (for the Qwen3 templates)")
    args = ap.parse_args()
    templates = load_templates(args)
    golden = render_cases(templates)
    with open(os.path.join(FIXTURES, "template_cases.json"), "w", encoding="utf-8") as f:
        json.dump(golden, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(golden['cases'])} template cases", file=sys.stderr)
    if args.gguf:
        rendered = [c["expected"] for c in golden["cases"] if c["template"] == "smollm2" and "expected" in c][:8]
        toks = tokenize_cases(args.gguf, rendered)
        with open(os.path.join(FIXTURES, "smollm2_tokenize.json"), "w", encoding="utf-8") as f:
            json.dump(toks, f, ensure_ascii=False, indent=1)
            f.write("\n")
        print(f"wrote {len(toks['cases'])} tokenization cases", file=sys.stderr)


if __name__ == "__main__":
    main()
