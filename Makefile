# `make demo` and `make test` each create .venv on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
VISDOM_STAMP := $(VENV)/.visdom-static

.PHONY: venv visdom test demo bench bench-gpu clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip "setuptools<81" wheel
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q --no-build-isolation visdom==0.2.4
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	@# `jupyter nbconvert --execute demo/demo.ipynb` needs an output format in nbconvert 7
	mkdir -p $(VENV)/etc/jupyter
	echo '{"NbConvertApp": {"export_format": "notebook"}}' > $(VENV)/etc/jupyter/jupyter_nbconvert_config.json
	touch $(STAMP)

# visdom 0.2.4 downloads its JavaScript, CSS and fonts from CDNs on its first
# start; this fills its static folder in .venv from the npm registry instead
# (utils/visdom_offline.py), so `python -m visdom.server` works offline.
# Without npm it says so in one line and everything else still works.
visdom: $(VISDOM_STAMP)

$(VISDOM_STAMP): $(STAMP) utils/visdom_offline.py
	@$(PY) -m utils.visdom_offline && touch $@ || true

test: $(STAMP) $(VISDOM_STAMP)
	$(PY) -m pytest -q tests

# The shapes demo: train the small preset on the CPU, evaluate it (AP table
# and eval.json), and draw its detections on a few validation images. It
# evaluates the final weights (the lr has decayed by then; doc/training.md).
# It needs no visdom files (`make visdom` fills them), which keeps a fresh
# clone's `make demo` within its 8 minutes.
DEMO ?= runs/demo
demo: $(STAMP)
	$(PY) train.py --dataset shapes --save_folder $(DEMO) --eval_every 0 --channels_last
	$(PY) eval.py --dataset shapes --trained_model $(DEMO)/shapes.pth \
		--save_folder $(DEMO)/eval --json $(DEMO)/eval.json
	rm -rf $(DEMO)/val_images $(DEMO)/detections
	$(PY) -m data.shapes --out $(DEMO)/val_images --format voc --num 6 --seed 1
	$(PY) test.py --dataset shapes --trained_model $(DEMO)/shapes.pth \
		--input $(DEMO)/val_images/JPEGImages --save_folder $(DEMO)/detections \
		--visual_threshold 0.5

# Speed benchmarks (ratios against torchvision and ssd.pytorch's algorithms)
bench: $(STAMP)
	$(PY) -m utils.bench.core
	$(PY) -m utils.bench.train_step
	$(PY) -m utils.bench.ssdlite
	$(PY) -m utils.bench.onnx
	$(PY) -m utils.bench.augment
	$(PY) -m utils.bench.voc_eval

# The prepared GPU run (training fp32/bf16/fp16/compile and inference FPS
# against torchvision on one card); `--device cpu --quick` is its smoke mode.
bench-gpu: $(STAMP)
	$(PY) -m utils.bench.gpu

clean:
	rm -rf runs
