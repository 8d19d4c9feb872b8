"""utils.export: the ONNX model (NMS inside) gives build_ssd('test')'s detections."""
import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch

from data.config import shapes as shapes_cfg
from _scripts import load_script
from data.shapes import SHAPES_CLASSES, generate
from ssd import build_ssd
from utils import export as ex
from utils.checkpoint import atomic_save
from utils.inference import Predictor


def _net():
    """The shapes preset (small and fast), random weights with the background
    logits raised, as in a trained model: a few hundred detections per image."""
    torch.manual_seed(0)
    net = build_ssd('test', cfg=shapes_cfg, num_classes=6).eval()
    with torch.no_grad():
        for c in net.conf:
            c.bias[0::6] += 3.0
    return net


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp('export')
    net = _net()
    atomic_save({'model': net.state_dict(), 'args': {'dataset': 'shapes'}}, d / 'shapes.pth')
    assert ex.main(['--trained_model', str(d / 'shapes.pth')]) == 0     # default: shapes.onnx
    images = []
    for i in range(8):                              # generated shapes, through JPEG
        cv2.imwrite(str(d / f'{i}.jpg'), generate(7, i)[0])
        images.append(cv2.imread(str(d / f'{i}.jpg')))
    return net, d / 'shapes.onnx', images


@pytest.mark.parametrize('batch', [1, 8])
def test_onnxruntime_equals_pytorch_class_by_class(files, batch):
    net, onnx_file, images = files
    x = Predictor(net, net.size).preprocess(images[:batch])
    with torch.no_grad():
        ref = net(x)
    sess = ort.InferenceSession(str(onnx_file), providers=['CPUExecutionProvider'])
    out = sess.run(['detections'], {'images': x.numpy()})[0]
    assert out.shape == (batch, 6, 200, 5) and out.dtype == np.float32
    ok, msg = ex.same_detections(out, ref, tol=1e-4)
    assert ok, msg
    assert (ref[..., 0] > 0).sum() > 50 * batch          # a real workload, not empty
    assert not out[:, 0].any()                            # background rows are zero
    s = out[..., 0]
    assert (np.diff(s, axis=2) <= 1e-6).all()             # sorted, zeros after the last


def test_export_detect_equals_detect_in_pytorch():
    net = _net()
    x = torch.randn(2, 3, net.size, net.size) * 50
    with torch.no_grad():
        assert torch.equal(ex.ExportableSSD(net)(x), net(x))


def test_top_k_and_thresholds_are_detects():
    """Fewer rows than candidates: the same top_k best after NMS."""
    net = _net()
    net.detect.top_k, net.detect.conf_thresh, net.detect.nms_thresh = 3, 0.2, 0.3
    x = torch.randn(2, 3, net.size, net.size) * 50
    with torch.no_grad():
        ref = net(x)
        ours = ex.ExportableSSD(net)(x)
    assert ours.shape == (2, 6, 3, 5) and torch.equal(ours, ref)


def test_top_k_above_the_prior_count_pads_with_zero_rows():
    net = _net()
    P = net.priors.shape[0]
    net.detect.top_k = P + 7
    x = torch.randn(1, 3, net.size, net.size) * 50
    with torch.no_grad():
        ours = ex.ExportableSSD(net)(x)
        assert ours.shape == (1, 6, P + 7, 5)
        ok, msg = ex.same_detections(ours, net(x), tol=0)    # rows of equal scores: any order
        assert ok, msg
    assert not ours[:, :, P:].any()


def test_same_detections_fails_on_a_missing_or_moved_box():
    a = torch.zeros(1, 2, 3, 5)
    a[0, 1, 0] = torch.tensor([.9, .1, .1, .5, .5])
    a[0, 1, 1] = torch.tensor([.8, .2, .2, .6, .6])
    b = a.clone()
    b[0, 1, [0, 1]] = b[0, 1, [1, 0]]                     # swapped rows: the same set
    assert ex.same_detections(a, b)[0]
    b[0, 1, 0, 3] += 2e-4
    assert not ex.same_detections(a, b)[0]
    assert not ex.same_detections(a, a[:, :, :2])[0]
    c = a.clone()
    c[0, 1, 1] = 0
    assert not ex.same_detections(a, c)[0]


def test_onnx_predictor_is_predictor(files):
    net, onnx_file, images = files
    pred = ex.OnnxPredictor(onnx_file, conf_thresh=0.05, batch_size=3)
    assert pred.size == net.size and pred.channel_order == 'RGB' and pred.num_classes == 6
    assert tuple(pred.classes) == SHAPES_CLASSES
    theirs = Predictor(net, net.size, conf_thresh=0.05, batch_size=3)(images)
    ours = pred(images)
    assert len(ours) == len(theirs) == 8
    for a, b in zip(ours, theirs):
        assert len(a['scores']) == len(b['scores'])
        ka = np.lexsort((a['scores'], a['labels']))
        kb = np.lexsort((b['scores'], b['labels']))
        np.testing.assert_allclose(a['scores'][ka], b['scores'][kb], atol=1e-4)
        np.testing.assert_array_equal(a['labels'][ka], b['labels'][kb])


def test_bad_weight_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / 'bad.pth'
    bad.write_bytes(b'not a checkpoint')
    assert ex.main(['--trained_model', str(bad), '--out', str(tmp_path / 'x.onnx')]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'bad.pth' in err
    assert not (tmp_path / 'x.onnx').exists()


def _matched(a, b):
    """Every detection of entry ``a`` has one in ``b``: same class, score to
    the 4 decimals written (+1e-4), box to the 2 decimals written (+0.01)."""
    free = [True] * len(b['scores'])
    for box, lab, s in zip(a['boxes'], a['labels'], a['scores']):
        for j, (box2, lab2, s2) in enumerate(zip(b['boxes'], b['labels'], b['scores'])):
            if free[j] and lab == lab2 and abs(s - s2) <= 2e-4 and \
                    max(abs(u - v) for u, v in zip(box, box2)) <= 0.02:
                free[j] = False
                break
        else:
            return False
    return not any(free)


def test_test_py_onnx_on_images_and_a_video_equals_pytorch(files, tmp_path):
    import contextlib
    import io
    import json
    net, onnx_file, images = files
    (tmp_path / 'in').mkdir()
    for i in range(3):
        cv2.imwrite(str(tmp_path / 'in' / f'{i}.jpg'), images[i])
    video = cv2.VideoWriter(str(tmp_path / 'in' / 'clip.mp4'), cv2.VideoWriter_fourcc(*'mp4v'),
                            5, (160, 120))
    for i in range(4):
        video.write(cv2.resize(images[3 + i], (160, 120)))
    video.release()
    test = load_script('test')
    runs = {}
    for name, model in (('torch', ['--trained_model', str(onnx_file.with_suffix('.pth'))]),
                        ('onnx', ['--onnx', str(onnx_file)])):
        with contextlib.redirect_stdout(io.StringIO()):
            assert test.main(model + ['--input', str(tmp_path / 'in'), '--visual_threshold',
                                      '0.05', '--save_folder', str(tmp_path / name)]) == 0
        runs[name] = json.loads((tmp_path / name / 'detections.json').read_text())
    a, b = runs['torch'], runs['onnx']
    assert len(a) == len(b) == 3 + 4
    assert [(e['file'], e.get('frame')) for e in a] == [(e['file'], e.get('frame')) for e in b]
    assert sum(len(e['scores']) for e in a) > 20
    assert all(_matched(x, y) for x, y in zip(a, b))
    assert sorted(p.name for p in (tmp_path / 'onnx').iterdir()) == [
        '0.jpg', '1.jpg', '2.jpg', 'clip.mp4', 'detections.json']
    names = {n for e in b for n in e['names']}
    assert names and names <= set(SHAPES_CLASSES)


def test_test_py_onnx_missing_file_is_one_line(tmp_path, capsys):
    test = load_script('test')
    assert test.main(['--onnx', str(tmp_path / 'none.onnx'), '--input', str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'none.onnx' in err[0]
