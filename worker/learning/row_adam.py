"""Lazy Adam for embedding tables, with each row's own step count.

``torch.optim.SparseAdam`` updates a row's moments only when the row is looked up (lazy),
but corrects their bias with the step count of the whole table. A row looked up for the
first time after a few thousand steps of the table then has a first moment of ``0.1 g`` and a second
of ``0.001 g^2`` with no correction left (``1 - 0.999^t`` is ~1), so it moves
``lr * 0.1 / sqrt(0.001)`` = 3.2 x its learning rate on one sample, and more on its next
few. With a large catalog of rarely seen items, every cycle moved many rows that far on
single samples; the candidate fit noise and the gate rejected it (``bench.gate_churn``).
Here each row counts its own steps, as if it had an Adam of its own: a row seen once
moves by at most ``lr`` per coordinate, and a row seen at every step is updated exactly as
dense Adam would update it (tested).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["RowAdam"]


class RowAdam(torch.optim.Optimizer):
    """Adam over the rows present in each sparse gradient, bias-corrected per row.

    State per parameter: ``exp_avg`` and ``exp_avg_sq`` (its shape) and ``steps`` (one
    count per row). A parameter that grew (more item rows) has its state padded with zeros
    on the next step, so new rows start fresh.
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        """One update of the rows in each parameter's sparse gradient (no closure)."""
        for group in self.param_groups:
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.coalesce()  # unique rows: the update is not linear
                rows, values = grad.indices()[0], grad.values()
                if not rows.numel():
                    continue
                m, v, steps = self._state(p)
                t = steps[rows] + 1
                steps[rows] = t
                m_rows = m[rows].mul_(beta1).add_(values, alpha=1 - beta1)
                v_rows = v[rows].mul_(beta2).addcmul_(values, values, value=1 - beta2)
                m[rows], v[rows] = m_rows, v_rows
                shape = (-1,) + (1,) * (values.dim() - 1)
                bc1 = (1 - torch.pow(beta1, t)).view(shape)
                bc2 = (1 - torch.pow(beta2, t)).view(shape)
                update = (m_rows / bc1).div_((v_rows / bc2).sqrt_().add_(eps))
                p.index_add_(0, rows, update, alpha=-lr)

    def _state(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        state = self.state[p]
        if not state:
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
            state["steps"] = torch.zeros(p.shape[0], dtype=p.dtype, device=p.device)
        elif state["steps"].shape[0] < p.shape[0]:
            for key in ("exp_avg", "exp_avg_sq", "steps"):
                old = state[key]
                state[key] = torch.zeros((p.shape[0], *old.shape[1:]), dtype=old.dtype,
                                         device=old.device)
                state[key][: old.shape[0]] = old
        return state["exp_avg"], state["exp_avg_sq"], state["steps"]

    def reset_rows(self, rows: torch.Tensor) -> None:
        """Rows that now hold another item (eviction) start over.

        Rows past a state's length (the table grew since its last step) have no state
        yet; they start at zero when the state is padded.
        """
        for state in self.state.values():
            for value in state.values():
                idx = rows.to(value.device)
                value[idx[idx < value.shape[0]]] = 0

    def adopt(self, old: RowAdam, params: Iterable[torch.Tensor]) -> None:
        """Take ``old``'s state for ``params`` (its own parameters, replaced by grown ones).

        The state is padded on the next step.
        """
        for new_p, old_p in zip(params, old.param_groups[0]["params"], strict=True):
            if old_p in old.state:
                self.state[new_p] = old.state[old_p]
