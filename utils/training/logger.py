"""Training logs: a progress bar, ``metrics.csv``, visdom, TensorBoard,
MLflow and the loss plot.

- :class:`TrainLogger`: a tqdm bar over the iterations (ETA, ``loss_l``,
  ``loss_c``, lr, img/s), one ``metrics.csv`` row every ``log_every``
  iterations (and one per evaluation), and the same points sent to visdom
  and TensorBoard.
- :class:`VisdomPlotter`: real-time loss plots on a running visdom server
  (``python -m visdom.server``, then ``--visdom True``). When the server
  cannot be reached it warns once and training goes on.
- :class:`TensorBoardWriter`: the same values as TensorBoard scalars
  (``--tensorboard DIR``, then ``tensorboard --logdir DIR``).
- :class:`MLflowWriter`: the same scalars to an MLflow run, the settings
  as its parameters (``--mlflow``: a local ``<save_folder>/mlruns``, no server).
- :func:`plot_loss_curves`: ``loss_l``, ``loss_c`` and the total against the
  iteration, from ``metrics.csv``, as a PNG (matplotlib, no display needed).
"""
import csv
import math
import os
import sys
import time
import warnings

#: evaluation metric (``--eval_metric``) -> its metrics.csv column and label
EVAL_COLUMNS = {'voc07': 'voc07_map', 'voc12': 'voc12_map', 'coco': 'coco_ap'}
EVAL_LABELS = {'voc07': 'VOC07 mAP', 'voc12': 'VOC2010+ mAP', 'coco': 'COCO AP'}

CSV_FIELDS = ('iteration', 'loss_l', 'loss_c', 'loss', 'lr', 'img_per_s',
              'train_time_s', 'skipped') + tuple(EVAL_COLUMNS.values())


class VisdomPlotter:
    """One visdom window with ``loss_l``, ``loss_c`` and ``loss`` against
    the iteration, plus one with the validation mAP.

    Any failure (no server, server gone) gives one warning and disables the
    plotter; it never raises.
    """

    def __init__(self, server='http://localhost', port=8097, env='main',
                 title='SSD training', timeout=3.0):
        self.env, self.title, self.vis = env, title, None
        self.win_loss = f'{env}_loss'
        self.win_map = f'{env}_map'
        self._created = set()
        try:
            import visdom
        except ImportError:
            self._warn('visdom is not installed (pip install visdom)')
            return
        try:
            vis = visdom.Visdom(server=server, port=port, env=env,
                                use_incoming_socket=False, raise_exceptions=True)
            ok = vis.check_connection(timeout_seconds=timeout)
        except Exception as e:  # connection refused, bad URL
            ok, vis = False, None
            self._warn(f'cannot reach the visdom server at {server}:{port} ({e})')
            return
        if not ok:
            self._warn(f'cannot reach the visdom server at {server}:{port} '
                       '(start it with `python -m visdom.server`)')
            return
        self.vis = vis

    def _warn(self, msg):
        warnings.warn(f'visdom: {msg}; training goes on without visdom plots',
                      RuntimeWarning, stacklevel=3)
        self.vis = None

    @property
    def enabled(self):
        return self.vis is not None

    def _line(self, win, x, ys, legend, title, ylabel):
        if self.vis is None:
            return
        import numpy as np
        X = np.full((1, len(ys)), float(x))
        Y = np.asarray([ys], dtype=float)
        try:
            if win not in self._created:
                self.vis.line(X=X, Y=Y, win=win, env=self.env,
                              opts=dict(title=title, legend=list(legend),
                                        xlabel='iteration', ylabel=ylabel))
                self._created.add(win)
            else:
                self.vis.line(X=X, Y=Y, win=win, env=self.env, update='append')
        except Exception as e:  # server went away
            self._warn(f'sending a plot failed ({e})')

    def losses(self, it, loss_l, loss_c):
        self._line(self.win_loss, it, [loss_l, loss_c, loss_l + loss_c],
                   ('loss_l', 'loss_c', 'loss'), f'{self.title}: loss', 'loss')

    def map(self, it, value, label=EVAL_LABELS['voc07']):
        """The validation metric ``label`` (e.g. 'COCO AP') after ``it``."""
        self._line(self.win_map, it, [value], (label,),
                   f'{self.title}: validation {label}', label)


class TensorBoardWriter:
    """TensorBoard scalars (``torch.utils.tensorboard.SummaryWriter``):
    ``train/loss_l``, ``train/loss_c``, ``train/loss``, ``train/lr``,
    ``train/img_per_s`` per log row and ``val/<metric column>`` (e.g.
    ``val/voc07_map``) per evaluation, against the iteration.

    A resumed run (``start_iter > 0``) hides the earlier run's events after
    ``start_iter`` (TensorBoard's ``purge_step``), as metrics.csv drops its rows.
    """

    def __init__(self, log_dir, start_iter=0):
        from torch.utils.tensorboard import SummaryWriter
        self.log_dir = os.fspath(log_dir)
        self.writer = SummaryWriter(self.log_dir,
                                    purge_step=start_iter + 1 if start_iter else None)

    def losses(self, it, loss_l, loss_c, lr, img_per_s):
        for tag, v in (('loss_l', loss_l), ('loss_c', loss_c), ('loss', loss_l + loss_c),
                       ('lr', lr), ('img_per_s', img_per_s)):
            self.writer.add_scalar(f'train/{tag}', v, it)
        self.writer.flush()

    def metric(self, it, name, value):
        """Validation metric ``name`` ('voc07', 'voc12' or 'coco')."""
        self.writer.add_scalar(f'val/{EVAL_COLUMNS[name]}', value, it)
        self.writer.flush()

    def close(self):
        self.writer.close()


def mlflow_uri(value, save_folder):
    """``--mlflow``'s tracking URI: True (or yes/1) -> a local store,
    ``file:<save_folder>/mlruns``; False (no/0/none) -> None; a URI
    (``file:``, ``sqlite:``, ``http://`` ...) as it is; a folder -> its
    ``file:`` URI. Raises ValueError (one line) when mlflow is not installed."""
    import importlib.util
    flag = str(value).strip()
    if flag.lower() in ('false', 'no', '0', 'none', ''):
        return None
    if importlib.util.find_spec('mlflow') is None:
        raise ValueError('--mlflow needs the mlflow package: pip install mlflow')
    if flag.lower() in ('true', 'yes', '1'):
        flag = os.path.join(save_folder, 'mlruns')
    if ':' in flag and not os.path.isabs(flag) and len(flag.split(':')[0]) > 1:
        return flag                     # a URI (a Windows drive letter is a path)
    return 'file:' + os.path.abspath(flag)


class MLflowWriter:
    """The TensorBoard scalars, to an MLflow run (``mlflow.MlflowClient``; no
    global active run): ``train/loss_l``, ``train/loss_c``, ``train/loss``,
    ``train/lr``, ``train/img_per_s`` per log row and ``val/<metric column>``
    per evaluation, at step = iteration; ``params`` (the run's settings) as
    parameters, ``tags`` as tags. The run is in experiment ``experiment``
    (made when missing) of the tracking store ``uri``. A ``file:`` store needs
    ``MLFLOW_ALLOW_FILE_STORE=true`` in MLflow 3 (set here unless set);
    MLflow's usage telemetry is off (``MLFLOW_DISABLE_TELEMETRY``, unless
    set). A failure to log warns once and turns the writer off; training goes on."""

    def __init__(self, uri, params=None, tags=None, experiment='ssd', run_name=None):
        os.environ.setdefault('MLFLOW_DISABLE_TELEMETRY', 'true')   # nothing leaves the machine
        if uri.startswith('file:'):
            os.environ.setdefault('MLFLOW_ALLOW_FILE_STORE', 'true')
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(experiment)
        eid = exp.experiment_id if exp is not None else self.client.create_experiment(experiment)
        run = self.client.create_run(eid, run_name=run_name,
                                     tags={k: str(v) for k, v in (tags or {}).items()})
        self.run_id = run.info.run_id
        items = [Param(str(k)[:250], str(v)[:6000]) for k, v in (params or {}).items()]
        for i in range(0, len(items), 100):      # MLflow takes 100 parameters per batch
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def _log(self, it, values):
        if self.client is None:
            return
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        try:
            self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, int(it))
                                                        for k, v in values.items()])
        except Exception as e:   # a store gone or full: warn once, train on
            warnings.warn(f'mlflow: logging failed ({e}); training goes on without MLflow',
                          RuntimeWarning)
            self.client = None

    def losses(self, it, loss_l, loss_c, lr, img_per_s):
        self._log(it, {'train/loss_l': loss_l, 'train/loss_c': loss_c,
                       'train/loss': loss_l + loss_c, 'train/lr': lr,
                       'train/img_per_s': img_per_s})

    def metric(self, it, name, value):
        """Validation metric ``name`` ('voc07', 'voc12' or 'coco')."""
        self._log(it, {f'val/{EVAL_COLUMNS[name]}': value})

    def close(self, status='FINISHED'):
        """End the run: FINISHED, KILLED (interrupted) or FAILED."""
        if self.client is not None:
            try:
                self.client.set_terminated(self.run_id, status)
            except Exception as e:
                warnings.warn(f'mlflow: ending the run failed ({e})', RuntimeWarning)
            self.client = None


class TrainLogger:
    """Progress bar, ``metrics.csv``, visdom and TensorBoard for the training loop.

    Only the process that writes (rank 0) should create an enabled logger;
    with ``enabled=False`` every method does nothing.

    Args:
        save_folder: where ``metrics.csv`` goes (appended to on resume; rows
            after ``start_iter`` from an earlier run are dropped).
        start_iter, max_iter: the iteration range of this run.
        log_every: iterations per CSV/visdom row.
        visdom: a :class:`VisdomPlotter` or None.
        tensorboard: a :class:`TensorBoardWriter`, a folder to make one in,
            or None.
        mlflow: an :class:`MLflowWriter` or None.
    """

    def __init__(self, save_folder, start_iter, max_iter, log_every=10,
                 visdom=None, enabled=True, progress=True, tensorboard=None, mlflow=None):
        self.enabled = enabled
        self.log_every = max(1, int(log_every))
        self.visdom = visdom
        self.mlflow = mlflow if enabled else None
        self.tensorboard = None
        self.start_iter, self.max_iter = start_iter, max_iter
        self._sum = [0.0, 0.0, 0]
        self._t_window = time.perf_counter()
        self._window = 0.0      # training seconds in the current log window
        self._imgs = 0
        self.train_time = 0.0
        self.bar = None
        if not enabled:
            return
        self.csv_path = os.path.join(save_folder, 'metrics.csv')
        self.train_time = _truncate_csv(self.csv_path, start_iter)
        new = not os.path.exists(self.csv_path)
        self._f = open(self.csv_path, 'a', newline='')
        self._w = csv.DictWriter(self._f, CSV_FIELDS)
        if new:
            self._w.writeheader()
        if tensorboard is not None:
            self.tensorboard = tensorboard if isinstance(tensorboard, TensorBoardWriter) \
                else TensorBoardWriter(tensorboard, start_iter)
        if progress:
            from tqdm import tqdm
            self.bar = tqdm(total=max_iter, initial=start_iter, unit='it',
                            dynamic_ncols=True, file=sys.stderr, smoothing=0.05)

    def step(self, it, loss_l, loss_c, lr, batch_images, skipped=0):
        """Record finished iteration ``it`` (0-based; ``it + 1`` are done).
        ``loss_l``/``loss_c`` are python floats (NaN for a skipped one)."""
        if not self.enabled:
            return
        if loss_l == loss_l and loss_c == loss_c:    # not NaN
            self._sum[0] += loss_l
            self._sum[1] += loss_c
            self._sum[2] += 1
        self._imgs += batch_images
        done = it + 1
        if self.bar is not None:
            self.bar.update(1)
        if done % self.log_every and done != self.max_iter:
            return
        now = time.perf_counter()
        dt = max(self._window + now - self._t_window, 1e-9)
        self.train_time += dt
        n = self._sum[2]
        ll, lc = (self._sum[0] / n, self._sum[1] / n) if n else (math.nan, math.nan)
        ips = self._imgs / dt
        row = dict(iteration=done, loss_l=f'{ll:.5f}', loss_c=f'{lc:.5f}',
                   loss=f'{ll + lc:.5f}', lr=f'{lr:.3g}', img_per_s=f'{ips:.1f}',
                   train_time_s=f'{self.train_time:.2f}', skipped=skipped)
        self._w.writerow(row)
        self._f.flush()
        if self.bar is not None:
            self.bar.set_postfix(loss_l=f'{ll:.3f}', loss_c=f'{lc:.3f}',
                                 lr=f'{lr:.2g}', img_s=f'{ips:.0f}', refresh=False)
        if self.visdom is not None:
            self.visdom.losses(done, ll, lc)
        if self.tensorboard is not None:
            self.tensorboard.losses(done, ll, lc, lr, ips)
        if self.mlflow is not None:
            self.mlflow.losses(done, ll, lc, lr, ips)
        self._sum = [0.0, 0.0, 0]
        self._imgs = 0
        self._window = 0.0
        self._t_window = time.perf_counter()

    def pause(self):
        """Stop the training clock (during evaluation and saving)."""
        if self.enabled:
            self._window += time.perf_counter() - self._t_window

    def resume(self):
        if self.enabled:
            self._t_window = time.perf_counter()

    def evaluation(self, iteration, value, metric='voc07'):
        """Record the validation ``metric`` ('voc07', 'voc12' or 'coco'; see
        :data:`EVAL_COLUMNS`) after ``iteration`` iterations."""
        if not self.enabled:
            return
        self._w.writerow({'iteration': iteration, EVAL_COLUMNS[metric]: f'{value:.4f}',
                          'train_time_s': f'{self.train_time + self._window:.2f}'})
        self._f.flush()
        self.write(f'iteration {iteration}: {EVAL_LABELS[metric]} {value:.4f}')
        if self.visdom is not None:
            self.visdom.map(iteration, value, EVAL_LABELS[metric])
        if self.tensorboard is not None:
            self.tensorboard.metric(iteration, metric, value)
        if self.mlflow is not None:
            self.mlflow.metric(iteration, metric, value)

    def write(self, msg):
        """Print a line without breaking the progress bar."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(msg, file=sys.stderr)
        else:
            print(msg, file=sys.stderr, flush=True)

    def close(self, status='finished'):
        """Close the bar and the sinks; ``status`` (the run's: 'finished',
        'interrupted', else failed) ends the MLflow run."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.mlflow is not None:
            self.mlflow.close({'finished': 'FINISHED', 'interrupted': 'KILLED'}.get(status,
                                                                                 'FAILED'))
        self._f.close()


def _truncate_csv(path, start_iter):
    """Keep only the rows of ``path`` at or before ``start_iter`` (a resumed
    run rewrites what came after its checkpoint). Returns the training time
    recorded in the last kept row (0 when none)."""
    if not os.path.exists(path):
        return 0.0
    with open(path, newline='') as f:
        rows = list(csv.DictReader(f))
    keep = [r for r in rows if r.get('iteration', '').isdigit()
            and int(r['iteration']) <= start_iter]
    if start_iter == 0:
        keep = []
    with open(path, 'w', newline='') as f:
        w = csv.DictWriter(f, CSV_FIELDS, extrasaction='ignore')
        w.writeheader()
        w.writerows(keep)
    times = [float(r['train_time_s']) for r in keep if r.get('train_time_s')]
    return times[-1] if times else 0.0


def read_metrics(path):
    """``metrics.csv`` -> dict of lists: the loss rows (``iteration``,
    ``loss_l``, ``loss_c``, ``loss``) and the evaluation rows
    (``eval_iteration``, ``eval_time_s`` and one list per metric column:
    ``voc07_map``, ``voc12_map``, ``coco_ap``, NaN where a row lacks it), as
    floats."""
    cols = tuple(EVAL_COLUMNS.values())
    out = {k: [] for k in ('iteration', 'loss_l', 'loss_c', 'loss', 'eval_iteration',
                           'train_time_s', 'eval_time_s') + cols}
    with open(path, newline='') as f:
        for r in csv.DictReader(f):
            if any(r.get(c) for c in cols):
                out['eval_iteration'].append(float(r['iteration']))
                for c in cols:
                    out[c].append(float(r.get(c) or 'nan'))
                out['eval_time_s'].append(float(r.get('train_time_s') or 'nan'))
            elif r.get('loss'):
                for k in ('iteration', 'loss_l', 'loss_c', 'loss', 'train_time_s'):
                    out[k].append(float(r[k]))
    return out


def plot_loss_curves(csv_path, png_path, title='SSD training loss', ax=None):
    """Plot ``loss_l``, ``loss_c`` and their sum against the iteration from
    ``metrics.csv`` into ``png_path`` (or onto ``ax``). Returns the path."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    m = read_metrics(csv_path)
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    ax.plot(m['iteration'], m['loss'], label='loss = loss_l + loss_c', color='k')
    ax.plot(m['iteration'], m['loss_l'], label='loss_l (Smooth L1)', color='tab:blue')
    ax.plot(m['iteration'], m['loss_c'], label='loss_c (softmax)', color='tab:orange')
    ax.set_xlabel('iteration')
    ax.set_ylabel('loss')
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    if own:
        fig.tight_layout()
        os.makedirs(os.path.dirname(os.path.abspath(png_path)), exist_ok=True)
        fig.savefig(png_path)
        plt.close(fig)
    return png_path
