# liqmon — the two commands a new machine needs: `make replay` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SHARED ?= ../shared/data/oct10
OUT    ?= out

.PHONY: install system-deps replay replay-real test lint bench digests clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

system-deps:
	bash scripts/system-deps.sh

# The main job on the embedded broker: the seeded synthetic 10-11 October day through Kafka
# and a faust worker; prints the alert timeline and the calibration table, writes
# $(OUT)/replay/{alerts.jsonl,summary.json,report.html}.
replay: install
	$(BIN)/liqmon replay --scenario oct10 --seed 1 --out $(OUT)/replay

# The real data of the day: Binance USDe/USDT minute bars as bookTicker frames, the Uniswap
# v3 pool block by block, Binance's BTCUSDT perp book-depth dump. The pool is the only
# independent witness of a Binance venue-local depeg in that data: its config says so.
replay-real: install
	$(BIN)/liqmon import $(SHARED)/usde_usdt_binance_1m.csv $(SHARED)/usde_usdt_uniswap_v3_blocks.csv \
		$(SHARED)/btcusdt_binance_bookdepth.csv --out $(OUT)/oct10-real.jsonl.gz
	$(BIN)/liqmon replay --capture $(OUT)/oct10-real.jsonl.gz --config replay/configs/oct10-real.toml \
		--out $(OUT)/replay-real

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: install system-deps lint
	$(BIN)/pytest

bench: install
	$(BIN)/liqmon bench

# A refactoring changes no output: sha256 of everything the synthetic day (inline) and the
# real data (through Kafka) write, against scripts/output_digests.json.
digests: install
	$(BIN)/python scripts/output_digests.py --check

clean:
	rm -rf $(VENV) $(OUT) .mypy_cache .ruff_cache .pytest_cache
