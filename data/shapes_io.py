"""Write the shapes dataset to disk in the VOC, COCO or YOLO layout.

``python -m data.shapes --out DIR --format voc|coco|yolo --num N --seed S
[--val-fraction 0.2]`` writes N images (index 0..N-1 of seed S); the last
``val-fraction`` of them form the 'val' split, the rest 'train'.

* voc:  DIR/{Annotations,JPEGImages}, DIR/ImageSets/Main/{train,val,
        trainval}.txt, DIR/classes.txt (load with CustomDetection or
        ``--dataset custom``); difficult objects carry <difficult>1.
* coco: DIR/annotations/instances_{train,val}2017.json,
        DIR/{train,val}2017/*.jpg; category ids 1..5; difficult objects are
        written as crowd (iscrowd 1), which the loaders and COCOeval ignore.
* yolo: DIR/images/{train,val}/*.jpg, DIR/labels/{train,val}/*.txt,
        DIR/classes.txt; YOLO has no difficult flag: difficult objects are
        left out.
"""
import argparse
import json
import os
import os.path as osp
from xml.sax.saxutils import escape

import cv2

from .shapes import SHAPES_CLASSES, generate

__all__ = ['write_dataset', 'main']


def _splits(num, val_fraction):
    n_val = int(round(num * val_fraction))
    return {'train': range(0, num - n_val), 'val': range(num - n_val, num)}


def _voc_xml(name, gt):
    objs = []
    for (x1, y1, x2, y2), lab, d in zip(gt['boxes'], gt['labels'],
                                        gt['difficult']):
        objs.append(
            f"  <object>\n    <name>{SHAPES_CLASSES[lab]}</name>\n"
            f"    <pose>Unspecified</pose>\n    <truncated>0</truncated>\n"
            f"    <difficult>{int(d)}</difficult>\n    <bndbox>\n"
            f"      <xmin>{int(x1) + 1}</xmin>\n      <ymin>{int(y1) + 1}</ymin>\n"
            f"      <xmax>{int(x2) + 1}</xmax>\n      <ymax>{int(y2) + 1}</ymax>\n"
            f"    </bndbox>\n  </object>\n")
    return (f"<annotation>\n  <folder>shapes</folder>\n"
            f"  <filename>{escape(name)}.jpg</filename>\n"
            f"  <size>\n    <width>{gt['width']}</width>\n"
            f"    <height>{gt['height']}</height>\n    <depth>3</depth>\n"
            f"  </size>\n  <segmented>0</segmented>\n{''.join(objs)}"
            f"</annotation>\n")


def _write_classes(out):
    with open(osp.join(out, 'classes.txt'), 'w') as f:
        f.write('\n'.join(SHAPES_CLASSES) + '\n')


def write_voc(out, seed, splits):
    for d in ('Annotations', 'JPEGImages', 'ImageSets/Main'):
        os.makedirs(osp.join(out, d), exist_ok=True)
    _write_classes(out)
    names = {}
    for split, idx in splits.items():
        names[split] = []
        for i in idx:
            img, gt = generate(seed, i)
            name = f'{i:06d}'
            cv2.imwrite(osp.join(out, 'JPEGImages', name + '.jpg'), img)
            with open(osp.join(out, 'Annotations', name + '.xml'), 'w') as f:
                f.write(_voc_xml(name, gt))
            names[split].append(name)
    names['trainval'] = names['train'] + names['val']
    for split, ids in names.items():
        with open(osp.join(out, 'ImageSets', 'Main', split + '.txt'), 'w') as f:
            f.write(''.join(n + '\n' for n in ids))


def write_coco(out, seed, splits):
    os.makedirs(osp.join(out, 'annotations'), exist_ok=True)
    cats = [{'id': k + 1, 'name': c, 'supercategory': 'shape'}
            for k, c in enumerate(SHAPES_CLASSES)]
    ann_id = 1
    for split, idx in splits.items():
        folder = f'{split}2017'
        os.makedirs(osp.join(out, folder), exist_ok=True)
        images, anns = [], []
        for i in idx:
            img, gt = generate(seed, i)
            name = f'{i:012d}.jpg'
            cv2.imwrite(osp.join(out, folder, name), img)
            images.append({'id': i + 1, 'file_name': name,
                           'width': gt['width'], 'height': gt['height']})
            for (x1, y1, x2, y2), lab, d in zip(gt['boxes'], gt['labels'],
                                                gt['difficult']):
                w, h = float(x2 - x1), float(y2 - y1)
                poly = [float(x1), float(y1), float(x2), float(y1),
                        float(x2), float(y2), float(x1), float(y2)]
                anns.append({'id': ann_id, 'image_id': i + 1,
                             'category_id': int(lab) + 1,
                             'bbox': [float(x1), float(y1), w, h],
                             'area': w * h, 'iscrowd': int(d),
                             'segmentation': [poly]})
                ann_id += 1
        with open(osp.join(out, 'annotations', f'instances_{folder}.json'),
                  'w') as f:
            json.dump({'info': {'description': f'shapes seed {seed}'},
                       'images': images, 'annotations': anns,
                       'categories': cats}, f)


def write_yolo(out, seed, splits):
    _write_classes(out)
    for split, idx in splits.items():
        for d in ('images', 'labels'):
            os.makedirs(osp.join(out, d, split), exist_ok=True)
        for i in idx:
            img, gt = generate(seed, i)
            name = f'{i:06d}'
            cv2.imwrite(osp.join(out, 'images', split, name + '.jpg'), img)
            w, h = gt['width'], gt['height']
            lines = []
            for (x1, y1, x2, y2), lab, d in zip(gt['boxes'], gt['labels'],
                                                gt['difficult']):
                if not d:
                    lines.append(f'{lab} {(x1 + x2) / 2 / w:.6f} '
                                 f'{(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f}'
                                 f' {(y2 - y1) / h:.6f}\n')
            with open(osp.join(out, 'labels', split, name + '.txt'), 'w') as f:
                f.write(''.join(lines))


WRITERS = {'voc': write_voc, 'coco': write_coco, 'yolo': write_yolo}


def write_dataset(out, fmt='voc', num=100, seed=0, val_fraction=0.2):
    """Write ``num`` shapes images (seed ``seed``) to ``out`` in ``fmt``."""
    if fmt not in WRITERS:
        raise ValueError(f'format must be one of {sorted(WRITERS)}')
    os.makedirs(out, exist_ok=True)
    WRITERS[fmt](out, seed, _splits(num, val_fraction))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m data.shapes',
                                description='Write the synthetic shapes '
                                'dataset in the VOC, COCO or YOLO layout.')
    p.add_argument('--out', required=True, help='output folder')
    p.add_argument('--format', default='voc', choices=sorted(WRITERS))
    p.add_argument('--num', type=int, default=100, help='number of images')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--val-fraction', type=float, default=0.2,
                   help="fraction of the images in the 'val' split")
    a = p.parse_args(argv)
    write_dataset(a.out, a.format, a.num, a.seed, a.val_fraction)
    print(f'wrote {a.num} shapes images ({a.format}) to {a.out}')


if __name__ == '__main__':
    main()
