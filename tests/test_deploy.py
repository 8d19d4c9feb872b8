"""Deploying the exported file: eval.py scores it (the .pth's mAP), INT8
(onnxruntime QDQ, float tail), OpenVINO IR, their metadata and bad input."""
import contextlib
import io
import json
import sys

import cv2
import numpy as np
import onnx
import pytest
import torch

from _scripts import load_script
from data.config import shapes as shapes_cfg
from data.shapes import SHAPES_CLASSES, generate
from ssd import build_ssd
from utils import export as ex
from utils.checkpoint import CheckpointError, atomic_save
from utils.inference import Predictor
from utils.weights import attach_record, model_record

openvino = pytest.importorskip('openvino')


def _net():
    """The shapes preset, random weights, background logits raised (a few
    hundred detections per image, as in test_export)."""
    torch.manual_seed(0)
    net = build_ssd('test', cfg=shapes_cfg, num_classes=6).eval()
    with torch.no_grad():
        for c in net.conf:
            c.bias[0::6] += 3.0
    return net


def _quiet(fn, *a):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return fn(*a)


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp('deploy')
    net = _net()
    sd = attach_record(net.state_dict(), model_record(net, SHAPES_CLASSES, 'shapes', 'RGB'))
    atomic_save(sd, d / 'shapes.pth')
    (d / 'calib').mkdir()
    for i in range(4):
        cv2.imwrite(str(d / 'calib' / f'{i}.jpg'), generate(11, i)[0])
    w = str(d / 'shapes.pth')
    for extra in ([], ['--format', 'openvino'],
                  ['--int8', '--calib_dataset', str(d / 'calib'), '--calib_images', '3']):
        assert _quiet(ex.main, ['--trained_model', w] + extra) == 0
    images = [generate(7, i)[0] for i in range(4)]
    return net, d, images


def test_metadata_carries_the_record_and_the_calibration(files):
    net, d, _ = files
    props = {p.key: p.value for p in onnx.load(str(d / 'shapes_int8.onnx')).metadata_props}
    meta = json.loads(props['ssd'])
    assert meta['record'] == model_record(net, SHAPES_CLASSES, 'shapes', 'RGB')
    assert meta['precision'] == 'int8'
    assert meta['calibration']['method'] == 'MinMax' and meta['calibration']['images'] == 3
    spec = ex.input_spec(meta)
    assert (spec.size, spec.mean, spec.std, spec.channel_order) == (
        160, (104.0, 117.0, 123.0), (1.0, 1.0, 1.0), 'RGB')
    assert spec.classes == SHAPES_CLASSES and spec.dataset == 'shapes'
    ov = ex.open_exported(d / 'shapes.xml')
    assert ov.backend == 'openvino' and ov.meta['record'] == meta['record']


def test_int8_quantizes_the_network_and_keeps_the_tail_float(files):
    _, d, _ = files
    g = onnx.load(str(d / 'shapes_int8.onnx')).graph
    ops = [n.op_type for n in g.node]
    assert ops.count('DequantizeLinear') > 20            # weights and activations of the convs
    inits = {i.name: i for i in g.initializer}
    axes = [a.i for n in g.node if n.op_type == 'DequantizeLinear' and n.input[0] in inits
            and len(inits[n.input[0]].dims) == 4 for a in n.attribute if a.name == 'axis']
    assert axes and all(a == 0 for a in axes)           # per output channel
    tail = [n for n in g.node if n.name.startswith('tail/')]
    tail_ops = {n.op_type for n in tail}
    assert {'Softmax', 'TopK', 'NonMaxSuppression'} <= tail_ops
    assert not tail_ops & {'QuantizeLinear', 'DequantizeLinear'}


def test_int8_detections_stay_close_to_fp32(files):
    net, d, images = files
    x = Predictor(net).preprocess(images)
    fp32 = ex.open_exported(d / 'shapes.onnx').forward(x)
    int8 = ex.open_exported(d / 'shapes_int8.onnx').forward(x)
    assert int8.shape == fp32.shape
    best_f, best_i = fp32[:, 1:, 0, 0], int8[:, 1:, 0, 0]     # top score per image and class
    assert (best_f - best_i).abs().max() < 0.1


@pytest.mark.parametrize('name', ['shapes.xml', 'shapes.onnx'])
def test_openvino_equals_pytorch(files, name):
    net, d, images = files
    x = Predictor(net).preprocess(images)
    with torch.no_grad():
        ref = net(x)
    out = ex.open_exported(d / name, 'openvino').forward(x)
    ok, msg = ex.same_detections(out, ref, tol=1e-4)
    assert ok, msg
    assert (ref[..., 0] > 0).sum() > 100


def _altstack():
    """The calling thread's sigaltstack as (address, size, disabled)."""
    import ctypes

    class Stack(ctypes.Structure):
        _fields_ = [('ss_sp', ctypes.c_void_p), ('ss_flags', ctypes.c_int),
                    ('ss_size', ctypes.c_size_t)]
    s = Stack()
    assert ctypes.CDLL(None).sigaltstack(None, ctypes.byref(s)) == 0
    return s.ss_sp, s.ss_size, bool(s.ss_flags & 2)


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='sigaltstack via glibc')
def test_openvino_leaves_the_signal_stack_alone(files):
    """Compiling a model on OpenVINO's CPU plugin installs an alternate signal
    stack of its own on the calling thread; with it in place a later SIGCHLD
    (a child process ending) killed the test process with SIGSEGV. The
    predictor puts the caller's stack back, so it is the same before and after."""
    _, d, images = files
    before = _altstack()
    p = ex.open_exported(d / 'shapes.xml')
    p.forward(p.preprocess(images[:1]))
    assert _altstack() == before
    del p


def _eval(argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        rc = load_script('eval').main(argv)
    return rc, out.getvalue()


def test_eval_scores_each_format_as_the_pth(files, tmp_path):
    _, d, _ = files
    maps, counts = {}, {}
    for name, flag in (('pth', ['--trained_model', str(d / 'shapes.pth')]),
                       ('onnx', ['--onnx', str(d / 'shapes.onnx')]),
                       ('xml', ['--onnx', str(d / 'shapes.xml')]),
                       ('onnx-ov', ['--onnx', str(d / 'shapes.onnx'), '--backend', 'openvino']),
                       ('int8', ['--onnx', str(d / 'shapes_int8.onnx')])):
        rc, text = _eval(flag + ['--dataset', 'shapes', '--num_images', '6', '--num_workers', '0',
                                 '--pr_curves', 'false', '--save_folder', str(tmp_path / name),
                                 '--json', str(tmp_path / f'{name}.json')])
        assert rc == 0, text
        assert 'Mean AP' in text or 'mAP' in text
        res = json.loads((tmp_path / f'{name}.json').read_text())
        maps[name], counts[name] = res['voc07']['map'], res['detections']
    assert counts['pth'] > 100
    for name in ('onnx', 'xml', 'onnx-ov'):
        assert abs(maps[name] - maps['pth']) <= 1e-3 and counts[name] == counts['pth']
    assert counts['int8'] > 0


def test_test_py_runs_the_openvino_ir(files, tmp_path):
    net, d, images = files
    (tmp_path / 'in').mkdir()
    for i, im in enumerate(images[:2]):
        cv2.imwrite(str(tmp_path / 'in' / f'{i}.png'), im)
    runs = {}
    for name, flag in (('torch', ['--trained_model', str(d / 'shapes.pth')]),
                       ('ov', ['--onnx', str(d / 'shapes.xml')])):
        assert _quiet(load_script('test').main, flag + [
            '--input', str(tmp_path / 'in'), '--visual_threshold', '0.05',
            '--save_folder', str(tmp_path / name)]) == 0
        runs[name] = json.loads((tmp_path / name / 'detections.json').read_text())
    assert [len(e['scores']) for e in runs['torch']] == [len(e['scores']) for e in runs['ov']]
    assert sum(len(e['scores']) for e in runs['ov']) > 10


def _one_line_error(capsys, rc):
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize('kind', ['garbage.onnx', 'truncated.onnx', 'garbage.xml'])
def test_bad_exported_file_is_one_line(files, tmp_path, capsys, kind):
    _, d, _ = files
    bad = tmp_path / kind
    if kind.startswith('truncated'):
        bad.write_bytes((d / 'shapes.onnx').read_bytes()[:5000])
    else:
        bad.write_bytes(b'not a model at all')
    capsys.readouterr()
    rc = load_script('eval').main(['--onnx', str(bad), '--dataset', 'shapes'])
    assert kind in _one_line_error(capsys, rc)


def test_file_without_our_metadata_says_what_is_missing(files, tmp_path, capsys):
    _, d, _ = files
    m = onnx.load(str(d / 'shapes.onnx'))
    del m.metadata_props[:]
    onnx.save(m, str(tmp_path / 'plain.onnx'))
    capsys.readouterr()
    rc = load_script('eval').main(['--onnx', str(tmp_path / 'plain.onnx'), '--dataset', 'shapes'])
    line = _one_line_error(capsys, rc)
    assert 'plain.onnx' in line and 'no ssd metadata' in line
    with pytest.raises(CheckpointError, match='lacks size, num_classes'):
        ex.input_spec({'classes': ['a']}, 'x.onnx')


def test_int8_without_calibration_is_an_argparse_error(files, capsys):
    _, d, _ = files
    with pytest.raises(SystemExit) as e:
        ex.main(['--trained_model', str(d / 'shapes.pth'), '--int8'])
    assert e.value.code == 2 and '--calib_dataset' in capsys.readouterr().err


def test_calibration_folder_without_images_is_one_line(files, tmp_path, capsys):
    _, d, _ = files
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / 'broken.jpg').write_bytes(b'no jpeg')
    rc = ex.main(['--trained_model', str(d / 'shapes.pth'), '--int8', '--out',
                  str(tmp_path / 'q.onnx'), '--calib_dataset', str(tmp_path / 'empty')])
    assert str(tmp_path / 'empty') in _one_line_error(capsys, rc)
    assert not (tmp_path / 'q.onnx').exists()


@pytest.mark.parametrize('module', ['openvino', 'onnxruntime'])
def test_missing_backend_is_one_line_saying_what_to_install(files, monkeypatch, capsys, module):
    _, d, _ = files
    monkeypatch.setitem(sys.modules, module, None)        # import fails
    name = 'shapes.xml' if module == 'openvino' else 'shapes.onnx'
    capsys.readouterr()
    rc = load_script('eval').main(['--onnx', str(d / name), '--dataset', 'shapes'])
    assert f'pip install {module}' in _one_line_error(capsys, rc)


def test_onnxruntime_refuses_an_ir_with_a_hint(files):
    _, d, _ = files
    with pytest.raises(ValueError, match='--backend openvino'):
        ex.open_exported(d / 'shapes.xml', 'onnxruntime')


@pytest.mark.parametrize('name', ['shapes.xml', 'shapes_int8.onnx'])
def test_demo_live_runs_an_exported_file(files, tmp_path, name):
    import demo.live as live
    _, d, images = files
    clip = tmp_path / 'clip.avi'
    video = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*'MJPG'), 5, (160, 120))
    for im in images[:3]:
        video.write(cv2.resize(im, (160, 120)))
    video.release()
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert live.main(['--onnx', str(d / name), '--source', str(clip), '--no_display',
                          '--output', str(tmp_path / 'out.avi'), '--thresh', '0.3']) == 0
    assert '3 frames' in out.getvalue()
    cap = cv2.VideoCapture(str(tmp_path / 'out.avi'))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
