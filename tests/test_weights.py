"""utils.weights: channel order per weight file, model inferred from shapes."""
import pytest
import torch

from data.config import shapes
from ssd import build_ssd
from utils.checkpoint import CheckpointError
from utils.weights import (build_from_weights, channel_order_for, class_names, infer_config,
                           read_weights)


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


def test_one_path_for_every_kind_of_weight_file(tmp_path):
    """Weights-only snapshot, full checkpoint with DDP/compile prefixes: the
    same network, class names and order; one-line errors."""
    torch.manual_seed(0)
    sd = build_ssd('train', cfg=shapes, num_classes=6).state_dict()
    torch.save(sd, tmp_path / 'snap.pth')
    torch.save({'model': {'module._orig_mod.' + k: v for k, v in sd.items()}, 'optimizer': {},
                'iteration': 5, 'args': {'dataset': 'shapes'}}, tmp_path / 'checkpoint.pth')
    for name in ('snap.pth', 'checkpoint.pth'):
        net, classes, order = build_from_weights(tmp_path / name, top_k=7)
        assert (net.cfg['name'], net.num_classes, net.phase, order) == ('shapes', 6, 'test', 'RGB')
        assert classes == ('circle', 'square', 'triangle', 'star', 'cross')
        assert net.detect.top_k == 7
        assert torch.equal(net.state_dict()['conf.0.weight'], sd['conf.0.weight'])
    wf = read_weights(tmp_path / 'checkpoint.pth')
    assert wf.meta['dataset'] == 'shapes' and build_from_weights(wf).net.num_classes == 6
    data = (tmp_path / 'snap.pth').read_bytes()
    (tmp_path / 'cut.pth').write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match='cut.pth: truncated or corrupted'):
        build_from_weights(tmp_path / 'cut.pth')
    with pytest.raises(CheckpointError, match='snap.pth: its shapes fit none of the models'):
        build_from_weights(tmp_path / 'snap.pth', dataset='voc', size=300)
    with pytest.raises(CheckpointError, match=r'snap.pth: does not fit the shapes SSD160 with 21'):
        build_from_weights(tmp_path / 'snap.pth', num_classes=21)


def test_class_names_in_one_place():
    cfg = dict(shapes, num_classes=6)
    assert class_names(cfg, 6) == ('circle', 'square', 'triangle', 'star', 'cross')
    assert class_names(cfg, 6, {'classes': list('abcde')}) == tuple('abcde')
    assert class_names({'name': 'VOC'}, 21)[0] == 'aeroplane'
    assert class_names({'name': 'VOC'}, 21, dataset='coco') == class_names({'name': 'VOC'}, 21)
    assert class_names({'name': 'COCO'}, 81, dataset='COCO')[0] == 'person'
    assert class_names({'name': 'VOC'}, 4) == ('class1', 'class2', 'class3')
