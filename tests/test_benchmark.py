"""utils.benchmark: one row per format, the same mAP for the float formats."""
import contextlib
import io
import json

import pytest
import torch

from data.config import shapes as shapes_cfg
from data.shapes import SHAPES_CLASSES
from ssd import build_ssd
from utils import benchmark
from utils.checkpoint import atomic_save
from utils.weights import attach_record, model_record


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    torch.manual_seed(0)
    net = build_ssd('test', cfg=shapes_cfg, num_classes=6).eval()
    with torch.no_grad():
        for c in net.conf:
            c.bias[0::6] += 3.0
    path = tmp_path_factory.mktemp('bench') / 'shapes.pth'
    atomic_save(attach_record(net.state_dict(), model_record(net, SHAPES_CLASSES, 'shapes')), path)
    return path


def test_one_row_per_format_with_json(weights, tmp_path):
    pytest.importorskip('openvino')
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert benchmark.main(['--trained_model', str(weights), '--dataset', 'shapes',
                               '--num_images', '4', '--repeats', '1', '--calib_images', '2',
                               '--json', str(tmp_path / 'b.json')]) == 0
    res = json.loads((tmp_path / 'b.json').read_text())
    rows = {r['format']: r for r in res['rows']}
    assert list(rows) == list(benchmark.FORMATS)
    for r in rows.values():
        assert r['ms_batch1'] > 0 and r['images_s_batch8'] > 0 and r['size_mb'] > 0
    for f in ('onnxruntime-fp32', 'openvino-fp32'):
        assert abs(rows[f]['map'] - rows['pytorch']['map']) <= 1e-3
    assert rows['pytorch']['speedup_batch8'] == 1.0
    assert rows['onnxruntime-int8']['size_mb'] < rows['onnxruntime-fp32']['size_mb']
    text = out.getvalue()
    assert all(f'| {f} |' in text for f in benchmark.FORMATS)
    assert res['meta']['images'] == 4 and res['meta']['dataset'] == 'shapes'


def test_formats_subset_and_unknown_format(weights, capsys):
    rows, meta = benchmark.run(benchmark.parse_args([
        '--trained_model', str(weights), '--dataset', 'shapes', '--num_images', '2',
        '--repeats', '1', '--formats', 'pytorch,onnxruntime-fp32']), log=lambda *_: None)
    assert [r['format'] for r in rows] == ['pytorch', 'onnxruntime-fp32']
    with pytest.raises(SystemExit) as e:
        benchmark.parse_args(['--trained_model', str(weights), '--formats', 'tensorflow'])
    assert e.value.code == 2 and 'tensorflow' in capsys.readouterr().err


def test_missing_package_leaves_the_row_out_with_one_line(weights, monkeypatch):
    monkeypatch.setattr(benchmark, 'missing_package',
                        lambda f: 'openvino' if f.startswith('openvino') else None)
    said = []
    rows, _ = benchmark.run(benchmark.parse_args([
        '--trained_model', str(weights), '--dataset', 'shapes', '--num_images', '2',
        '--repeats', '1', '--formats', 'pytorch,openvino-fp32']), log=said.append)
    assert [r['format'] for r in rows] == ['pytorch']
    assert said == ['openvino-fp32: left out (openvino is not installed: pip install openvino)']


def test_documented_command_without_optional_flags(weights, capsys):
    """``python -m utils.benchmark --trained_model W --dataset shapes`` (README):
    the whole val split, 100 calibration images, every installed format."""
    assert benchmark.main(['--trained_model', str(weights), '--dataset', 'shapes']) == 0
    out = capsys.readouterr().out
    assert 'shapes val (200 images)' in out
    assert '| pytorch |' in out and '| onnxruntime-int8 |' in out
