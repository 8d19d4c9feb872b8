"""utils.weights: channel order per weight file, model inferred from shapes."""
import pytest
import torch

from data.config import shapes
from ssd import build_ssd
from utils.checkpoint import CheckpointError
from utils.weights import build_from_weights, channel_order_for, infer_config


@pytest.mark.parametrize('name, order', [
    ('ssd300_mAP_77.43_v2.pth', 'RGB'), ('ssd_300_VOC0712.pth', 'BGR'),
    ('weights/SSD_512_VOC0712.pth', 'BGR'), ('VGG_VOC0712_SSD_300x300_iter_120000.pth', 'BGR'),
    ('my_caffe_port.pth', 'BGR'), ('ssd300_VOC_5000.pth', 'RGB')])
def test_channel_order_by_name(name, order):
    assert channel_order_for(name) == order
    assert channel_order_for(name, override='rgb') == 'RGB'


def test_channel_order_from_checkpoint_and_errors(tmp_path):
    p = tmp_path / 'checkpoint.pth'
    torch.save({'model': {'w': torch.zeros(1)}, 'args': {'channel_order': 'BGR'}}, p)
    assert channel_order_for(p) == 'BGR'
    assert channel_order_for(p, override='RGB') == 'RGB'
    torch.save({'w': torch.zeros(1)}, p)
    assert channel_order_for(p) == 'RGB'
    # a recorded order beats the name table
    ck = {'model': {'w': torch.zeros(1)}, 'args': {'channel_order': 'RGB'}}
    assert channel_order_for('caffe_finetuned.pth', checkpoint=ck) == 'RGB'
    with pytest.raises(ValueError):
        channel_order_for(p, override='YUV')


@pytest.mark.parametrize('size, num_classes, name', [
    (300, 21, 'VOC'), (300, 81, 'COCO'), (512, 21, 'VOC512'), (300, 4, 'VOC')])
def test_infer_config(size, num_classes, name):
    with torch.device('meta'):
        sd = build_ssd('train', size, num_classes).state_dict()
    cfg = infer_config(sd)
    assert (cfg['name'], cfg['min_dim'], cfg['num_classes']) == (name, size, num_classes)


def test_build_from_weights_shapes_checkpoint(tmp_path):
    torch.manual_seed(0)
    src = build_ssd('train', cfg=shapes, num_classes=6)
    p = tmp_path / 'checkpoint.pth'
    torch.save({'model': {'module.' + k: v for k, v in src.state_dict().items()},
                'args': {'dataset': 'shapes', 'size': 300}}, p)
    net, classes, order = build_from_weights(p)
    assert (net.phase, net.training, net.size, net.num_classes) == ('test', False, shapes['min_dim'], 6)
    assert len(classes) == 5 and order == 'RGB'
    assert torch.equal(net.conf[0].weight, src.conf[0].weight)
    with pytest.raises(CheckpointError, match='checkpoint.pth'):
        build_from_weights(p, size=512, dataset='VOC')
    with pytest.raises(CheckpointError, match='no such file'):
        build_from_weights(tmp_path / 'missing.pth')
