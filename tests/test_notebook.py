"""demo/demo.ipynb executes top to bottom (nbclient), in its fast mode."""
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from data.config import shapes

NOTEBOOK = Path(__file__).resolve().parents[1] / 'demo' / 'demo.ipynb'


def test_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == 'code']
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_notebook_executes(tmp_path, monkeypatch):
    """SSD_DEMO_FAST=1 trains a 1-iteration shapes model into SSD_DEMO_DIR,
    then detects on shapes images and shows them with matplotlib."""
    monkeypatch.setenv('SSD_DEMO_FAST', '1')
    monkeypatch.setenv('SSD_DEMO_DIR', str(tmp_path))
    monkeypatch.delenv('MPLBACKEND', raising=False)   # the kernel's inline backend
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name='python3',
                   resources={'metadata': {'path': str(NOTEBOOK.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs]
    assert not [o for o in outputs if o.output_type == 'error']
    assert any('image/png' in o.get('data', {}) for o in outputs)   # the matplotlib figure
    text = ''.join(o.get('text', '') for o in outputs)
    size = shapes['min_dim']
    assert f'shapes at {size}x{size}, 5 classes, RGB input' in text
    assert '4 images in' in text
    assert (tmp_path / 'shapes.pth').is_file() and (tmp_path / 'detections.png').is_file()
