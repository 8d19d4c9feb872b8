"""utils.convert_torchvision: torchvision's ssd300_vgg16 -> our SSD300 (81 COCO classes)."""
import numpy as np
import pytest
import torch
from torchvision.models.detection import ssd300_vgg16

from data import COCO_CLASSES, BaseTransform
from data.config import MEANS, coco
from layers import PriorBox
from layers.box_utils import point_form
from utils import convert_torchvision as ct
from utils.checkpoint import load_file

# torchvision's unused COCO category ids (named 'N/A'), literal
NA_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)


@pytest.fixture(scope='module')
def tv_model():
    torch.manual_seed(0)
    return ssd300_vgg16(weights=None, weights_backbone=None).eval()


@pytest.fixture(scope='module')
def tv_file(tv_model, tmp_path_factory):
    path = tmp_path_factory.mktemp('tv') / 'ssd300_vgg16_coco-random.pth'
    torch.save(tv_model.state_dict(), path)
    return path


@pytest.fixture(scope='module')
def converted(tv_file, tmp_path_factory):
    out = tmp_path_factory.mktemp('ours') / 'ssd300_COCO_torchvision.pth'
    assert ct.main(['--in', str(tv_file), '--out', str(out)]) == 0
    return out


def test_kept_classes_drop_the_na_ids():
    idx, names = ct.kept_classes(ct.coco_categories())
    assert len(idx) == 81 and idx[0] == 0
    assert sorted(set(range(91)) - set(idx)) == list(NA_IDS)
    assert names == tuple(COCO_CLASSES)


def _image(seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)      # BGR


def _ours_input(img):
    x = BaseTransform(300, MEANS)(img)[0][..., ::-1]
    return torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None]


def test_raw_outputs_equal_torchvision_for_kept_classes(tv_model, converted):
    from utils.weights import build_from_weights
    net, classes, order = build_from_weights(str(converted), phase='train')
    assert net.num_classes == 81 and classes == tuple(COCO_CLASSES) and order == 'RGB'
    # the same memory format and algorithm as torchvision's model, so that both
    # run the same convolution kernels (NHWC and NCHW round differently, and so
    # does Winograd: 1e-4 on this random net)
    net.to(memory_format=torch.contiguous_format)
    net.winograd = False
    x = _ours_input(_image())
    idx, _ = ct.kept_classes(ct.coco_categories())
    with torch.no_grad():
        loc, conf, priors = net(x)
        head = tv_model.head(list(tv_model.backbone(x).values()))
    assert loc.shape == (1, 8732, 4) and conf.shape == (1, 8732, 81)
    assert (loc - head['bbox_regression']).abs().max() < 1e-5
    assert (conf - head['cls_logits'][..., idx]).abs().max() < 1e-5
    assert torch.equal(priors, PriorBox(coco).forward())


def test_torchvision_preprocessing_is_ours_to_a_thousandth_grey_level(tv_model):
    """Same image: torchvision's transform (RGB in [0, 1], its mean/std) and
    BaseTransform minus MEANS swapped to RGB give the same tensor."""
    img = _image(1)
    rgb = torch.from_numpy(img[..., ::-1].copy()).permute(2, 0, 1).float() / 255
    theirs = tv_model.transform([rgb])[0].tensors
    d = (theirs - _ours_input(img)).abs().max().item()
    assert 1e-4 < d < 1e-3          # 123 - 255 * 0.48235 = 0.00075, etc.


def test_box_coder_and_anchor_scales_are_the_coco_config(tv_model):
    assert tuple(tv_model.box_coder.weights) == tuple(1 / v for v in (0.1, 0.1, 0.2, 0.2))
    scales = tv_model.anchor_generator.scales
    assert [round(s * 300) for s in scales] == coco['min_sizes'] + coco['max_sizes'][-1:]


def test_anchor_difference_is_the_clipped_centres_of_conv8_2(tv_model):
    """torchvision clips only w, h; ssd.pytorch (and we) clip the centres too:
    the last row and column of the 10x10 map (step 32) lie at 9.5/9.375."""
    from torchvision.models.detection.image_list import ImageList
    feats = [torch.zeros(1, 1, f, f) for f in coco['feature_maps']]
    theirs = tv_model.anchor_generator(ImageList(torch.zeros(1, 3, 300, 300), [(300, 300)]),
                                       feats)[0] / 300
    ours = point_form(PriorBox(coco).forward())
    differ = (ours - theirs).abs().max(1).values > 1e-6
    assert int(differ.sum()) == 114                # 19 cells x 6 boxes
    start = 38 * 38 * 4 + 19 * 19 * 6              # conv8_2's 600 priors follow
    assert differ.nonzero().min() >= start and differ.nonzero().max() < start + 600
    assert abs((ours - theirs).abs().max().item() - (9.5 / 9.375 - 1)) < 1e-6


def test_checkpoint_metadata(converted):
    obj = load_file(converted)
    assert obj['classes'] == list(COCO_CLASSES) and obj['channel_order'] == 'RGB'
    assert obj['args'] == {'dataset': 'COCO', 'size': 300}
    assert obj['model']['conf.0.weight'].shape == (4 * 81, 512, 3, 3)


def test_bad_input_is_one_line(tmp_path, capsys):
    bad = tmp_path / 'vgg.pth'
    torch.save({'features.0.weight': torch.zeros(64, 3, 3, 3)}, bad)
    assert ct.main(['--in', str(bad), '--out', str(tmp_path / 'o.pth')]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'vgg.pth' in err and 'ssd300_vgg16' in err
    assert not (tmp_path / 'o.pth').exists()


def test_default_command_names_the_file_to_download(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert ct.main([]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'weights/ssd300_vgg16_coco-b556d3b4.pth: no such file' in err[0]
    assert ct.SOURCE_URL in err[0]
