"""RowAdam: per-row bias correction for embedding tables."""

from __future__ import annotations

import torch

from worker.learning.row_adam import RowAdam


def _table(rows: int = 50, dim: int = 8) -> torch.nn.Embedding:
    torch.manual_seed(0)
    return torch.nn.Embedding(rows, dim, sparse=True)


def _step(table: torch.nn.Embedding, opt: torch.optim.Optimizer, rows: list[int],
          target: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    ids = torch.tensor(rows)
    ((table(ids) - target[ids]) ** 2).sum().backward()
    opt.step()


def test_rows_looked_up_at_every_step_follow_dense_adam_exactly():
    sparse, dense = _table(), _table()
    dense.weight.data.copy_(sparse.weight.data)
    dense_w = torch.nn.Parameter(dense.weight.data.clone())
    opt_s = RowAdam(sparse.parameters(), lr=0.05)
    opt_d = torch.optim.Adam([dense_w], lr=0.05)
    target = torch.randn(50, 8)
    for _ in range(30):
        _step(sparse, opt_s, list(range(50)), target)
        opt_d.zero_grad(set_to_none=True)
        ((dense_w - target) ** 2).sum().backward()
        opt_d.step()
    assert torch.allclose(sparse.weight, dense_w, atol=1e-5)


def test_a_row_seen_once_after_many_steps_moves_at_most_its_rate():
    lr = 0.01
    moved = {}
    for name, make in (("row", lambda p: RowAdam(p, lr=lr)),
                       ("table", lambda p: torch.optim.SparseAdam(list(p), lr=lr))):
        table = _table()
        opt = make(table.parameters())
        target = torch.randn(50, 8)
        for _ in range(3000):  # rows 0-9 every step
            _step(table, opt, list(range(10)), target)
        before = table.weight.data[42].clone()
        _step(table, opt, [42], target)  # row 42, for the first time
        moved[name] = float((table.weight.data[42] - before).abs().max())
    assert moved["row"] <= lr * 1.001
    assert moved["table"] > 2.5 * lr  # SparseAdam: 0.1 / sqrt(0.001) = 3.2x, in time


def test_grown_tables_keep_their_rows_moments_and_reset_rows_start_over():
    table = _table(rows=10)
    opt = RowAdam(table.parameters(), lr=0.01)
    target = torch.randn(20, 8)
    _step(table, opt, [1, 2], target)
    steps = opt.state[table.weight]["steps"].clone()
    bigger = torch.nn.Embedding(20, 8, sparse=True)
    bigger.weight.data[:10] = table.weight.data
    grown = RowAdam(bigger.parameters(), lr=0.01)
    grown.adopt(opt, bigger.parameters())
    _step(bigger, grown, [2, 15], target)
    after = grown.state[bigger.weight]["steps"]
    assert after.shape[0] == 20
    assert after[1] == steps[1] == 1 and after[2] == 2 and after[15] == 1
    grown.reset_rows(torch.tensor([2]))
    assert grown.state[bigger.weight]["steps"][2] == 0
    assert float(grown.state[bigger.weight]["exp_avg"][2].abs().sum()) == 0.0


def test_rows_reset_before_a_grown_state_is_padded_are_no_error_and_start_at_zero():
    # Eviction can hand back rows the table grew to since the optimiser's last step.
    table = _table(rows=10)
    opt = RowAdam(table.parameters(), lr=0.01)
    target = torch.randn(20, 8)
    _step(table, opt, [1, 2], target)
    bigger = torch.nn.Embedding(20, 8, sparse=True)
    grown = RowAdam(bigger.parameters(), lr=0.01)
    grown.adopt(opt, bigger.parameters())
    grown.reset_rows(torch.tensor([2, 15]))  # 15: past the state's length
    state = grown.state[bigger.weight]
    assert state["steps"].shape[0] == 10 and state["steps"][2] == 0
    _step(bigger, grown, [15], target)
    assert grown.state[bigger.weight]["steps"][15] == 1
