"""utils.bench.gpu (the prepared GPU benchmark) runs its code on the CPU in its
smoke mode and prints one table; no test needs a GPU."""
from utils.bench import gpu


def test_gpu_benchmark_smoke_mode_on_cpu(capsys):
    # the smoke run is a dozen SSD300 passes at batch 1 (seconds on 2 cores)
    assert gpu.main(['--device', 'cpu', '--quick']) == 0
    out = capsys.readouterr().out
    table = out[out.index('| what |'):]
    rows = [l for l in table.splitlines() if l.startswith('| training') or
            l.startswith('| inference')]
    assert [r.split(' | ')[0] for r in rows] == [
        '| training, fp32, batch 1 (images/s)', '| inference, batch 1, fp32 (frames/s)']
    for r in rows:     # ours, ours NCHW, torchvision: a number each, and the ratio
        cells = r.strip('| ').split(' | ')[1:]
        assert all(float(c) > 0 for c in cells[:3]) and cells[3].endswith('x')
