import numpy as np
import pytest
import torch
from torch.nn import functional as F

from worker.learning.model import FreshRecModel
from worker.learning.user_tower import UserTower


def toy(n_items=50, text_dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    semantic = torch.nn.functional.normalize(torch.randn(n_items, text_dim, generator=g), dim=-1)
    items = torch.randint(0, n_items, (256,), generator=g)
    hist = torch.randint(0, n_items, (256, 4), generator=g)
    mask = (torch.rand(256, 4, generator=g) > 0.3).float()
    labels = ((items % 2) == 0).float()  # a learnable rule: even items get clicked
    return semantic, items, hist, mask, labels


def test_same_seed_same_model_different_seed_different():
    a, b = FreshRecModel(16, 8, seed=1), FreshRecModel(16, 8, seed=1)
    c = FreshRecModel(16, 8, seed=2)
    assert torch.equal(a.proj.weight, b.proj.weight)
    assert not torch.equal(a.proj.weight, c.proj.weight)


def test_state_dict_round_trips():
    a, b = FreshRecModel(16, 8, seed=1), FreshRecModel(16, 8, seed=5)
    b.load_state_dict(a.state_dict())
    semantic, items, hist, mask, _ = toy()
    assert torch.equal(a(items, hist, mask, semantic), b(items, hist, mask, semantic))


def fit(model, semantic, items, hist, mask, labels, steps):
    """Full-batch Adam + SparseAdam steps; the loss after each."""
    dense = torch.optim.Adam(model.dense_parameters(), lr=0.05)
    sparse = torch.optim.SparseAdam(model.sparse_parameters(), lr=0.05)
    losses = []
    for _ in range(steps):
        loss = F.binary_cross_entropy_with_logits(model(items, hist, mask, semantic), labels)
        dense.zero_grad()
        sparse.zero_grad()
        loss.backward()
        dense.step()
        sparse.step()
        losses.append(float(loss))
    return losses


def test_loss_falls_on_a_toy_set():
    semantic, items, hist, mask, labels = toy()
    model = FreshRecModel(16, 8, capacity=64, seed=0)
    losses = fit(model, semantic, items, hist, mask, labels, 60)
    assert losses[-1] < 0.5 * losses[0]


def test_sparse_optimiser_touches_only_rows_in_the_batch():
    semantic, *_ = toy()
    model = FreshRecModel(16, 8, capacity=64, seed=0)
    before = model.collab.weight.detach().clone()
    opt = torch.optim.SparseAdam(model.sparse_parameters(), lr=0.1)
    items = torch.tensor([3, 5])
    hist = torch.tensor([[7, 0], [7, 0]])
    mask = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    loss = F.binary_cross_entropy_with_logits(model(items, hist, mask, semantic),
                                              torch.tensor([1.0, 0.0]))
    loss.backward()
    assert model.collab.weight.grad.is_sparse
    opt.step()
    changed = (model.collab.weight.detach() != before).any(dim=1).nonzero().flatten().tolist()
    assert set(changed) <= {3, 5, 7} and changed


@pytest.mark.parametrize("context_vectors", [False, True])
def test_published_vectors_and_tower_give_the_model_logit_exactly(context_vectors):
    semantic, items, hist, mask, _ = toy()
    model = FreshRecModel(16, 8, capacity=64, seed=3, history_len=4,
                          context_vectors=context_vectors)
    with torch.no_grad():
        if model.ctx is not None:
            model.ctx.weight.normal_()
        model.collab.weight.normal_()
        model.item_bias.weight.normal_()
        model.user_prior.normal_()
        model.bias.fill_(0.3)
        model.recency.normal_()  # an order-aware, asymmetric tower
        model.context.normal_(0.0, 0.5)
        model.last.normal_(0.0, 0.5)
    logits = model(items, hist, mask, semantic).detach().numpy()
    vecs = model.export(50, semantic)
    assert vecs.shape == (50, 17 if context_vectors else 9) and vecs.dtype == np.float32
    tower = model.tower()
    served = UserTower.from_bytes(tower.prior.astype("<f4").tobytes(), tower.to_bytes())
    for k in range(40):  # masks with gaps: a missing item keeps its position
        u = served.user_vector(vecs[hist[k].numpy()], mask[k].numpy().astype(bool))
        np.testing.assert_allclose(vecs[items[k]] @ u, logits[k], rtol=1e-4, atol=1e-4)


def test_the_tower_starts_as_the_mean_of_the_history_and_learns_order():
    model = FreshRecModel(16, 8, capacity=64, seed=0)
    w = torch.randn(3, 4, 8)
    mask = torch.tensor([[1, 1, 0, 1], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.float32)
    want = model.user_prior + (w * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True
                                                                            ).clamp(min=1)
    torch.testing.assert_close(model.user(w, mask), want)
    # "A then B" and "B then A" give different users once the next-item map has learnt.
    with torch.no_grad():
        model.last.normal_()
    ab = model.user(torch.stack([w[0, :2], w[0, :2].flip(0)]), torch.ones(2, 2))
    assert not torch.allclose(ab[0], ab[1])


def test_a_version_without_a_tower_serves_the_mean_of_the_history():
    prior = np.arange(4, dtype="<f4")
    tower = UserTower.from_bytes(prior.tobytes(), b"")
    hist = np.array([[1, 1, 1, 1, 9], [3, 3, 3, 3, 9]], np.float32)
    np.testing.assert_allclose(tower.user_vector(hist), [2, 3, 4, 5, 1])
    np.testing.assert_allclose(tower.user_vector(hist, np.array([False, True])), [3, 4, 5, 6, 1])
    np.testing.assert_allclose(tower.user_vector(hist[:0]), [0, 1, 2, 3, 1])


def test_grow_keeps_learnt_rows():
    model = FreshRecModel(16, 8, capacity=4, seed=0)
    with torch.no_grad():
        model.collab.weight[2] = 1.5
    assert model.grow(9)
    assert model.capacity == 16
    assert torch.all(model.collab.weight[2] == 1.5)
    new_row = model.collab.weight[8]  # a new row: small seeded noise, the same every time
    assert 0 < float(new_row.norm()) < 0.5
    twin = FreshRecModel(16, 8, capacity=4, seed=0)
    twin.grow(9)
    assert torch.equal(twin.collab.weight[8], new_row)
    assert model.collab.weight.requires_grad
    assert float(model.item_bias.weight[8].abs().sum()) == 0.0


def test_items_without_text_learn_a_vector():
    """The symmetry trap: with zero rows and a zero user prior, no id-only row ever moved."""
    model = FreshRecModel(16, 8, capacity=64, seed=0)
    semantic = torch.zeros(64, 16)  # a catalog of bare ids: no text vectors at all
    g = torch.Generator().manual_seed(1)
    items = torch.randint(0, 64, (512,), generator=g)
    hist = torch.randint(0, 64, (512, 3), generator=g)
    mask = torch.ones(512, 3)
    labels = ((items % 2) == (hist[:, 0] % 2)).float()  # taste: same parity as history
    before = model.collab.weight.detach().clone()
    losses = fit(model, semantic, items, hist, mask, labels, 100)
    moved = (model.collab.weight.detach() - before).norm(dim=1)
    assert float(moved.min()) > 0.1  # every row learnt, not only the biases
    assert losses[-1] < 0.5  # and the interaction is learnt: biases alone give ~0.69


def test_item_table_checkpoints_rows_the_shared_index_handed_out_since_its_last_sync():
    from consumers.columns import RowIndex
    from worker.learning.items import ItemTable

    index = RowIndex()
    table = ItemTable(4, index=index)
    table.set_semantic(["a"], np.ones((1, 4), np.float32))
    index.extend(f"i{k}" for k in range(3000))  # the pipeline, between two cycles
    state, tensors = table.state()
    assert len(state["ids"]) == 3001 and tensors["items/semantic"].shape == (3001, 4)
    restored = ItemTable(4, index=RowIndex(state["ids"]))
    restored.load(state, tensors)
    assert restored.semantic[0].tolist() == [1.0] * 4 and len(restored) == 3001


def test_context_vectors_learn_which_item_follows_which():
    """A then B clicked, B then A not: only a history-role row can tell them apart."""
    n = 20
    semantic = torch.zeros(n, 4)
    items = torch.arange(n).repeat(40)
    prev = (items + 1) % n  # the history holds the item after the candidate
    labels = ((items % 2) == 0).float()
    hist = torch.where(labels.bool(), prev, (items + n - 1) % n).unsqueeze(1)
    mask = torch.ones_like(hist, dtype=torch.float32)

    def final_loss(context_vectors: bool) -> float:
        model = FreshRecModel(4, 8, capacity=n, seed=0, history_len=1,
                              context_vectors=context_vectors)
        return fit(model, semantic, items, hist, mask, labels, 300)[-1]

    assert final_loss(True) < 0.5 * final_loss(False)


def test_context_rows_grow_reset_and_survive_a_checkpoint():
    model = FreshRecModel(16, 8, capacity=4, seed=1, context_vectors=True)
    assert model.ctx is not None and len(model.sparse_parameters()) == 3
    with torch.no_grad():
        model.ctx.weight.fill_(2.0)
    model.grow(9)
    assert model.ctx.weight.shape == (16, 8)
    assert torch.all(model.ctx.weight[:4] == 2.0) and torch.all(model.ctx.weight[4:] == 0.0)
    model.reset_rows(np.array([1]), salt=5)
    assert torch.all(model.ctx.weight[1] == 0.0)
    again = FreshRecModel(16, 8, capacity=16, seed=1, context_vectors=True)
    again.load_state_dict(model.state_dict())
    assert torch.equal(again.ctx.weight, model.ctx.weight)
