"""utils.convert_vgg: torchvision VGG16 -> ssd.pytorch's vgg16_reducedfc layout."""
import pytest
import torch
import torchvision

from ssd import build_ssd
from utils.checkpoint import CheckpointError, load_file
from utils.convert_vgg import TORCHVISION_STD, convert_state_dict, main


@pytest.fixture(scope='module')
def tv_vgg():
    torch.manual_seed(0)
    return torchvision.models.vgg16(weights=None).eval()


@pytest.fixture(scope='module')
def converted(tv_vgg):
    return convert_state_dict(tv_vgg.state_dict())


@pytest.fixture(scope='module')
def ssd_vgg(converted):
    net = build_ssd('train', 300, 21)
    net.vgg.load_state_dict(converted)  # strict: keys and shapes must fit
    return net.vgg.eval()


def test_keys_and_shapes(converted):
    assert set(converted) == set(build_ssd('train', 300, 21).vgg.state_dict())
    assert converted['31.weight'].shape == (1024, 512, 3, 3)
    assert converted['31.bias'].shape == (1024,)
    assert converted['33.weight'].shape == (1024, 1024, 1, 1)
    assert converted['33.bias'].shape == (1024,)
    assert converted['28.weight'].shape == (512, 512, 3, 3)
    assert len(converted) == 30


def test_fc6_reproduced_on_known_input(tv_vgg, ssd_vgg):
    """The dilated 3x3 fc6 at one output position reads 9 pool5 cells 6 apart.
    Place those 9 cells at taps (0,3,6)x(0,3,6) of an otherwise zero 7x7
    pool5 map: the original fc6 (a Linear on the flattened map) must give the
    same value at every 4th output."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 512, 13, 13, generator=g)
    fc6, lin = ssd_vgg[31], tv_vgg.classifier[0]
    for (r, c) in [(6, 6), (2, 9), (0, 0)]:   # centre, interior, corner (padding)
        y_conv = fc6(x)[0, :, r, c]                               # [1024]
        patch = torch.zeros(1, 512, 7, 7)
        for a in range(3):
            for b in range(3):
                rr, cc = r + 6 * (a - 1), c + 6 * (b - 1)
                if 0 <= rr < 13 and 0 <= cc < 13:
                    patch[0, :, 3 * a, 3 * b] = x[0, :, rr, cc]
        y_fc = lin(torch.flatten(patch, 1))[0, ::4]               # [1024]
        torch.testing.assert_close(y_conv, y_fc, rtol=1e-5, atol=1e-5)
        assert y_fc.abs().max() > 0.1   # non-trivial values


def test_fc7_reproduced(tv_vgg, ssd_vgg):
    g = torch.Generator().manual_seed(2)
    z = torch.randn(1, 1024, 1, 1, generator=g)
    v = torch.zeros(1, 4096)
    v[0, ::4] = z.flatten()
    torch.testing.assert_close(ssd_vgg[33](z).flatten(), tv_vgg.classifier[3](v)[0, ::4],
                               rtol=1e-5, atol=1e-5)


def test_convs_copied_and_conv1_folded(tv_vgg, ssd_vgg):
    """conv1_1 on SSD's input (0..255 minus the mean) equals torchvision's
    conv1_1 on the same input divided by 255*std; later convs are copied."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 3, 8, 8, generator=g) * 60
    std = torch.tensor(TORCHVISION_STD).view(1, 3, 1, 1) * 255
    torch.testing.assert_close(ssd_vgg[0](x), tv_vgg.features[0](x / std), rtol=1e-4, atol=1e-4)
    assert torch.equal(ssd_vgg[28].weight, tv_vgg.features[28].weight)
    unfolded = convert_state_dict(tv_vgg.state_dict(), fold_std=False)
    assert torch.equal(unfolded['0.weight'], tv_vgg.features[0].weight)


def test_cli_writes_loadable_file(tmp_path, tv_vgg, converted):
    src, dst = tmp_path / 'vgg16-397923af.pth', tmp_path / 'out' / 'vgg16_reducedfc.pth'
    torch.save(tv_vgg.state_dict(), src)
    assert main(['--out', str(dst), '--torchvision_weights', str(src)]) == 0
    sd = load_file(dst)
    assert set(sd) == set(converted)
    assert torch.equal(sd['31.weight'], converted['31.weight'])


def test_bad_input_one_line_error(tmp_path, capsys):
    bad = tmp_path / 'resnet.pth'
    torch.save({'features.0.weight': torch.zeros(64, 3, 3, 3)}, bad)
    assert main(['--out', str(tmp_path / 'x.pth'), '--torchvision_weights', str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count('\n') == 0 and 'resnet.pth' in err
    assert main(['--out', str(tmp_path / 'x.pth'), '--torchvision_weights',
                 str(tmp_path / 'missing.pth')]) == 1
    with pytest.raises(CheckpointError):
        convert_state_dict({'features.0.weight': torch.zeros(64, 4, 3, 3)})
