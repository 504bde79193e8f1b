# liqmon — the two commands a new machine needs: `make replay` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SHARED ?= ../shared/data/oct10
OUT    ?= out

.PHONY: install system-deps replay replay-real test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

system-deps:
	bash scripts/system-deps.sh

# The main job on the embedded broker: the real 10 October USDe data (Binance minute
# bars as bookTicker frames, the Uniswap v3 pool block by block) through Kafka and the
# faust worker; prints the alert timeline, writes $(OUT)/replay/.
replay: install
	$(BIN)/liqmon import $(SHARED)/usde_usdt_binance_1m.csv $(SHARED)/usde_usdt_uniswap_v3_blocks.csv \
		--out $(OUT)/oct10-usde.jsonl.gz
	$(BIN)/liqmon replay --capture $(OUT)/oct10-usde.jsonl.gz --out $(OUT)/replay

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: install system-deps lint
	$(BIN)/pytest

bench: install
	$(BIN)/liqmon bench

clean:
	rm -rf $(VENV) $(OUT) .mypy_cache .ruff_cache .pytest_cache
