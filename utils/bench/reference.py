"""The original ssd.pytorch algorithms (amdegroot/ssd.pytorch, ``layers/``),
re-implemented with the smallest changes that make them run on current
PyTorch, as the baseline of the benchmarks and the equivalence tests.

What is kept exactly: ``match`` loops over the images and, inside, over the
ground truths to force each one's best prior (the last ground truth wins a
shared prior); the hard negatives are ranked by ``log_sum_exp(x) - x[label]``
computed over the whole ``[B * P, C]`` logits with the *global* max, then
the double sort (:func:`hard_negatives`; the original kept the autograd graph
of this ranking, through which no gradient flows); the cross entropy runs over the selected
rows; both terms are divided by N (NaN when N = 0, as in the original).
``Detect`` loops over images and classes and calls the pure-Python greedy
``nms`` (Francisco Massa's port), which sorts ascending and pops the last.

What changed for current PyTorch: ``size_average=False`` is
``reduction='sum'``; no ``Variable``; ``loss_c`` is reshaped to ``[B, P]``
before ``loss_c[pos] = 0`` (the original ``IndexError``); ``Detect`` is a plain
class (the legacy ``autograd.Function`` with ``__init__`` no longer runs);
``nms`` builds its temporaries directly instead of ``index_select(out=...)``
into resized buffers; the CPU/``.cuda()`` switch is dropped.

The training step (``train.py``'s loop, :func:`train_loop`) is rebuilt from
its algorithm too, for the recipe check (``python -m utils.bench.recipe``,
``tests/test_recipe.py``): the VOC target transform (XML pixels minus one,
difficult objects dropped, divided by width and height, no clipping), the
evaluation ``BaseTransform`` used as the training transform (resize to
``size x size``, float32, minus the BGR means, then BGR -> RGB), a shuffling
DataLoader that starts over when it runs out, ``adjust_learning_rate`` when
the iteration is in ``lr_steps``, and SGD (momentum, weight decay on every
parameter, PyTorch's update rule) on ``loss_l + loss_c``. What changed:
``Variable`` is gone, the XML goes through defusedxml, the optimiser's
update is written out (:class:`SGD`) instead of calling ``torch.optim``,
and the loader is re-created on ``StopIteration`` (the fix every user of
the original loop applies).
"""
import cv2
import defusedxml.ElementTree as ET
import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.data as tud

VARIANCE = (0.1, 0.2)


def point_form(boxes):
    """``[P, 4]`` (cx, cy, w, h) -> (x1, y1, x2, y2)."""
    return torch.cat((boxes[:, :2] - boxes[:, 2:] / 2,
                      boxes[:, :2] + boxes[:, 2:] / 2), 1)


def intersect(box_a, box_b):
    """``[A, 4] x [B, 4] -> [A, B]`` intersection areas (expand, no alloc)."""
    A, B = box_a.size(0), box_b.size(0)
    max_xy = torch.min(box_a[:, 2:].unsqueeze(1).expand(A, B, 2),
                       box_b[:, 2:].unsqueeze(0).expand(A, B, 2))
    min_xy = torch.max(box_a[:, :2].unsqueeze(1).expand(A, B, 2),
                       box_b[:, :2].unsqueeze(0).expand(A, B, 2))
    inter = torch.clamp(max_xy - min_xy, min=0)
    return inter[:, :, 0] * inter[:, :, 1]


def jaccard(box_a, box_b):
    """IoU ``[A, B]`` of point-form boxes."""
    inter = intersect(box_a, box_b)
    area_a = ((box_a[:, 2] - box_a[:, 0]) *
              (box_a[:, 3] - box_a[:, 1])).unsqueeze(1).expand_as(inter)
    area_b = ((box_b[:, 2] - box_b[:, 0]) *
              (box_b[:, 3] - box_b[:, 1])).unsqueeze(0).expand_as(inter)
    return inter / (area_a + area_b - inter)


def encode(matched, priors, variances):
    """Point-form ``matched [P, 4]`` -> offsets against priors (cx, cy, w, h)."""
    g_cxcy = (matched[:, :2] + matched[:, 2:]) / 2 - priors[:, :2]
    g_cxcy = g_cxcy / (variances[0] * priors[:, 2:])
    g_wh = (matched[:, 2:] - matched[:, :2]) / priors[:, 2:]
    g_wh = torch.log(g_wh) / variances[1]
    return torch.cat([g_cxcy, g_wh], 1)


def decode(loc, priors, variances):
    """Offsets ``[P, 4]`` -> point-form boxes."""
    boxes = torch.cat((
        priors[:, :2] + loc[:, :2] * variances[0] * priors[:, 2:],
        priors[:, 2:] * torch.exp(loc[:, 2:] * variances[1])), 1)
    boxes[:, :2] -= boxes[:, 2:] / 2
    boxes[:, 2:] += boxes[:, :2]
    return boxes


def match(threshold, truths, priors, variances, labels, loc_t, conf_t, idx):
    """One image: fills ``loc_t[idx] [P, 4]`` and ``conf_t[idx] [P]``."""
    overlaps = jaccard(truths, point_form(priors))
    best_prior_overlap, best_prior_idx = overlaps.max(1, keepdim=True)
    best_truth_overlap, best_truth_idx = overlaps.max(0, keepdim=True)
    best_truth_idx.squeeze_(0)
    best_truth_overlap.squeeze_(0)
    best_prior_idx.squeeze_(1)
    best_prior_overlap.squeeze_(1)
    best_truth_overlap.index_fill_(0, best_prior_idx, 2)
    for j in range(best_prior_idx.size(0)):
        best_truth_idx[best_prior_idx[j]] = j
    matches = truths[best_truth_idx]
    conf = labels[best_truth_idx] + 1
    conf[best_truth_overlap < threshold] = 0
    loc_t[idx] = encode(matches, priors, variances)
    conf_t[idx] = conf


def log_sum_exp(x):
    """``[R, C] -> [R, 1]``, stabilised by the max over the whole tensor."""
    x_max = x.data.max()
    return torch.log(torch.sum(torch.exp(x - x_max), 1, keepdim=True)) + x_max


def hard_negatives(conf_data, conf_t, negpos_ratio=3):
    """ssd.pytorch's hard-negative mining: ``[B, P]`` bool, True for the
    ``negpos_ratio * num_pos`` rows of each image with the largest
    ``log_sum_exp(x) - x[conf_t]`` (positives set to 0 first), ranked by the
    double sort. The loss then uses ``pos | neg``.

    :func:`log_sum_exp` subtracts one max over the whole ``[B * P, C]``
    batch: a row whose logits all lie more than about 88 (float32 ``exp``
    underflow) below that max gets ``log(0) = -inf``, ranks below every
    other row (and below the positives' zeros, which can then take slots
    of the count), and is never mined, however large its real background
    loss. Our ``MultiBoxLoss`` ranks with a per-row ``log_softmax``."""
    num, num_priors, num_classes = conf_data.shape
    batch_conf = conf_data.detach().reshape(-1, num_classes)
    loss_c = log_sum_exp(batch_conf) - batch_conf.gather(1, conf_t.reshape(-1, 1))
    loss_c = loss_c.view(num, -1)
    pos = conf_t > 0
    loss_c[pos] = 0
    _, loss_idx = loss_c.sort(1, descending=True)
    _, idx_rank = loss_idx.sort(1)
    num_pos = pos.long().sum(1, keepdim=True)
    num_neg = torch.clamp(negpos_ratio * num_pos, max=pos.size(1) - 1)
    return idx_rank < num_neg.expand_as(idx_rank)


class MultiBoxLoss:
    """ssd.pytorch's MultiBoxLoss (threshold 0.5, 3:1 mining, bkg label 0).
    ``loss((loc [B, P, 4], conf [B, P, C], priors [P, 4]), targets)`` with
    targets a list of ``[n_i, 5]`` tensors -> ``(loss_l, loss_c)``."""

    def __init__(self, num_classes, overlap_thresh=0.5, neg_pos=3,
                 variance=VARIANCE):
        self.num_classes = num_classes
        self.threshold = overlap_thresh
        self.negpos_ratio = neg_pos
        self.variance = variance

    def __call__(self, predictions, targets):
        loc_data, conf_data, priors = predictions
        num = loc_data.size(0)
        priors = priors[:loc_data.size(1), :]
        num_priors = priors.size(0)
        loc_t = torch.Tensor(num, num_priors, 4)
        conf_t = torch.LongTensor(num, num_priors)
        for idx in range(num):
            truths = targets[idx][:, :-1].data
            labels = targets[idx][:, -1].data
            match(self.threshold, truths, priors.data, self.variance, labels,
                  loc_t, conf_t, idx)
        pos = conf_t > 0

        pos_idx = pos.unsqueeze(pos.dim()).expand_as(loc_data)
        loc_p = loc_data[pos_idx].view(-1, 4)
        loc_t = loc_t[pos_idx].view(-1, 4)
        loss_l = F.smooth_l1_loss(loc_p, loc_t, reduction='sum')

        neg = hard_negatives(conf_data, conf_t, self.negpos_ratio)
        num_pos = pos.long().sum(1, keepdim=True)

        pos_idx = pos.unsqueeze(2).expand_as(conf_data)
        neg_idx = neg.unsqueeze(2).expand_as(conf_data)
        conf_p = conf_data[(pos_idx + neg_idx).gt(0)].view(-1, self.num_classes)
        targets_weighted = conf_t[(pos + neg).gt(0)]
        loss_c = F.cross_entropy(conf_p, targets_weighted, reduction='sum')

        N = num_pos.data.sum()
        return loss_l / N.float(), loss_c / N.float()


def nms(boxes, scores, overlap=0.5, top_k=200):
    """Greedy NMS in Python: ``(keep [n] long, count)``; keep[:count] are the
    kept indices, by decreasing score; suppresses IoU > overlap."""
    keep = scores.new(scores.size(0)).zero_().long()
    if boxes.numel() == 0:
        return keep, 0
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = torch.mul(x2 - x1, y2 - y1)
    v, idx = scores.sort(0)
    idx = idx[-top_k:]
    count = 0
    while idx.numel() > 0:
        i = idx[-1]
        keep[count] = i
        count += 1
        if idx.size(0) == 1:
            break
        idx = idx[:-1]
        xx1 = torch.index_select(x1, 0, idx)
        yy1 = torch.index_select(y1, 0, idx)
        xx2 = torch.index_select(x2, 0, idx)
        yy2 = torch.index_select(y2, 0, idx)
        xx1 = torch.clamp(xx1, min=x1[i])
        yy1 = torch.clamp(yy1, min=y1[i])
        xx2 = torch.clamp(xx2, max=x2[i])
        yy2 = torch.clamp(yy2, max=y2[i])
        w = torch.clamp(xx2 - xx1, min=0.0)
        h = torch.clamp(yy2 - yy1, min=0.0)
        inter = w * h
        rem_areas = torch.index_select(area, 0, idx)
        union = (rem_areas - inter) + area[i]
        IoU = inter / union
        idx = idx[IoU.le(overlap)]
    return keep, count


class Detect:
    """ssd.pytorch's Detect: ``detect(loc [B, P, 4], conf [B, P, C] softmax
    scores, priors [P, 4]) -> [B, C, top_k, 5]`` rows (score, x1, y1, x2, y2)."""

    def __init__(self, num_classes, bkg_label=0, top_k=200, conf_thresh=0.01,
                 nms_thresh=0.45, variance=VARIANCE):
        self.num_classes = num_classes
        self.background_label = bkg_label
        self.top_k = top_k
        self.nms_thresh = nms_thresh
        self.conf_thresh = conf_thresh
        self.variance = variance

    def __call__(self, loc_data, conf_data, prior_data):
        num = loc_data.size(0)
        num_priors = prior_data.size(0)
        output = torch.zeros(num, self.num_classes, self.top_k, 5)
        conf_preds = conf_data.view(num, num_priors, self.num_classes).transpose(2, 1)
        for i in range(num):
            decoded_boxes = decode(loc_data[i], prior_data, self.variance)
            conf_scores = conf_preds[i].clone()
            for cl in range(1, self.num_classes):
                c_mask = conf_scores[cl].gt(self.conf_thresh)
                scores = conf_scores[cl][c_mask]
                if scores.size(0) == 0:   # the original tested dim() == 0
                    continue
                l_mask = c_mask.unsqueeze(1).expand_as(decoded_boxes)
                boxes = decoded_boxes[l_mask].view(-1, 4)
                ids, count = nms(boxes, scores, self.nms_thresh, self.top_k)
                output[i, cl, :count] = torch.cat(
                    (scores[ids[:count]].unsqueeze(1), boxes[ids[:count]]), 1)
        return output


# ------------------------------------------------------------ training step

def voc_target(root, width, height, class_to_ind, keep_difficult=False):
    """ssd.pytorch's ``VOCAnnotationTransform``: an annotation Element ->
    list of ``[x1, y1, x2, y2, label]``; the XML's integer pixels minus one,
    divided by width (x) or height (y) in float64; difficult objects dropped;
    boxes are not clipped to the image."""
    res = []
    for obj in root.iter('object'):
        difficult = int(obj.find('difficult').text) == 1
        if not keep_difficult and difficult:
            continue
        name = obj.find('name').text.lower().strip()
        bbox = obj.find('bndbox')
        box = []
        for i, pt in enumerate(('xmin', 'ymin', 'xmax', 'ymax')):
            cur = int(bbox.find(pt).text) - 1
            box.append(cur / width if i % 2 == 0 else cur / height)
        box.append(class_to_ind[name])
        res.append(box)
    return res


def base_transform(image, size, mean):
    """ssd.pytorch's ``base_transform``: resize (bilinear) to ``size x size``,
    float32, minus the BGR ``mean``."""
    x = cv2.resize(image, (size, size)).astype(np.float32)
    x -= np.array(mean, dtype=np.float32)
    return x.astype(np.float32)


class VOCDetection(tud.Dataset):
    """ssd.pytorch's ``VOCDetection(root, image_sets)`` with
    ``transform=BaseTransform(size, mean)``: item -> (image FloatTensor
    [3, size, size] RGB, target float64 array [n, 5])."""

    def __init__(self, root, image_sets, classes, size=300,
                 mean=(104, 117, 123)):
        self.size, self.mean = size, mean
        self.class_to_ind = dict(zip(classes, range(len(classes))))
        self.ids = []
        for year, name in image_sets:
            rootpath = f'{root}/VOC{year}'
            with open(f'{rootpath}/ImageSets/Main/{name}.txt') as f:
                self.ids += [(rootpath, line.strip()) for line in f if line.strip()]

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, index):
        folder, img_id = self.ids[index]
        target = ET.parse(f'{folder}/Annotations/{img_id}.xml').getroot()
        img = cv2.imread(f'{folder}/JPEGImages/{img_id}.jpg')
        height, width, _ = img.shape
        target = np.array(voc_target(target, width, height, self.class_to_ind))
        img = base_transform(img, self.size, self.mean)   # boxes unchanged
        img = img[:, :, (2, 1, 0)]                         # BGR -> RGB
        return torch.from_numpy(img.copy()).permute(2, 0, 1), target


def detection_collate(batch):
    """ssd.pytorch's collate: (stacked images, list of FloatTensor [n, 5])."""
    imgs, targets = [], []
    for sample in batch:
        imgs.append(sample[0])
        targets.append(torch.FloatTensor(sample[1]))
    return torch.stack(imgs, 0), targets


class SGD:
    """``torch.optim.SGD(params, lr, momentum, weight_decay)`` written out,
    the update ssd.pytorch trains with: ``d = g + wd * p``; the momentum
    buffer starts as ``d`` and then ``buf = momentum * buf + d``;
    ``p -= lr * buf``. ``param_groups`` holds one group, as in ssd.pytorch
    (every parameter, biases included, with the same lr and decay)."""

    def __init__(self, params, lr, momentum=0.9, weight_decay=5e-4):
        self.param_groups = [dict(params=list(params), lr=lr, momentum=momentum,
                                  weight_decay=weight_decay)]
        self.buf = {}

    def zero_grad(self):
        for p in self.param_groups[0]['params']:
            p.grad = None

    @torch.no_grad()
    def step(self):
        g = self.param_groups[0]
        for p in g['params']:
            if p.grad is None:
                continue
            d = p.grad.add(p, alpha=g['weight_decay'])
            if g['momentum']:
                b = self.buf.get(p)
                if b is None:
                    b = self.buf[p] = d.clone()
                else:
                    b.mul_(g['momentum']).add_(d)
                d = b
            p.add_(d, alpha=-g['lr'])


def adjust_learning_rate(optimizer, base_lr, gamma, step):
    """ssd.pytorch: ``lr = args.lr * gamma ** step`` on every group."""
    lr = base_lr * (gamma ** step)
    for group in optimizer.param_groups:
        group['lr'] = lr


def train_loop(net, dataset, num_classes, batch_size=32, lr=1e-3, momentum=0.9,
               weight_decay=5e-4, gamma=0.1, lr_steps=(80000, 100000, 120000),
               start_iter=0, max_iter=120000, seed=0, criterion=None, order=None):
    """ssd.pytorch's ``train()`` after the set-up, on a network already
    holding its starting weights (``--resume``: no ``weights_init``).

    The loader shuffles (its generator seeded with ``seed``; the original
    does not seed at all, so any order is one of its runs); ``order(it)``
    instead gives the dataset indices of iteration ``it``'s batch, e.g. the
    order another trainer used. Returns the per-iteration ``[(lr, loss_l,
    loss_c), ...]``; ``net`` is trained in place."""
    optimizer = SGD(net.parameters(), lr=lr, momentum=momentum,
                    weight_decay=weight_decay)
    criterion = criterion or MultiBoxLoss(num_classes, 0.5, 3)
    net.train()
    step_index = 0
    if order is None:
        loader = tud.DataLoader(dataset, batch_size, shuffle=True, num_workers=0,
                                collate_fn=detection_collate,
                                generator=torch.Generator().manual_seed(seed))
    else:
        loader = tud.DataLoader(dataset, batch_sampler=[list(order(it)) for it in
                                                        range(start_iter, max_iter)],
                                num_workers=0, collate_fn=detection_collate)
    batch_iterator = iter(loader)
    history = []
    for iteration in range(start_iter, max_iter):
        if iteration in lr_steps:
            step_index += 1
            adjust_learning_rate(optimizer, lr, gamma, step_index)
        try:
            images, targets = next(batch_iterator)
        except StopIteration:
            batch_iterator = iter(loader)
            images, targets = next(batch_iterator)
        out = net(images)
        optimizer.zero_grad()
        loss_l, loss_c = criterion(out, targets)
        loss = loss_l + loss_c
        loss.backward()
        optimizer.step()
        history.append((optimizer.param_groups[0]['lr'], loss_l.item(), loss_c.item()))
    return history
