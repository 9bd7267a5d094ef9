"""GEM projection vs quadprog, the constraint it guarantees, rank deficiency, and the optimiser hook."""
import numpy as np
import pytest
import quadprog
import torch
from torch import nn

from sermodels.continual.gem import GEMOptimizer, project_gradient, solve_gem_dual


def _quadprog_projection(M, g, margin, ridge):
    """The reference GEM code's QP, solved by quadprog: v, then M^T v + g."""
    t = M.shape[0]
    P = M @ M.T
    P = 0.5 * (P + P.T) + ridge * np.eye(t)
    v = quadprog.solve_qp(P, -(M @ g), np.eye(t), np.zeros(t) + margin)[0]
    return v, v @ M + g


@pytest.mark.parametrize("seed", range(8))
def test_projection_equals_quadprog_on_random_problems(seed):
    rng = np.random.default_rng(seed)
    t, p = int(rng.integers(1, 6)), int(rng.integers(6, 300))
    M = rng.normal(size=(t, p)) * rng.uniform(0.1, 10, size=(t, 1))
    g = rng.normal(size=p) - 0.5 * M.sum(0)  # mostly conflicting with the memories
    margin, ridge = float(rng.choice([0.0, 0.5])), float(rng.choice([1e-3, 1e-1]))
    v_ref, z_ref = _quadprog_projection(M, g, margin, ridge)
    v = solve_gem_dual(M, g, margin=margin, ridge=ridge)
    np.testing.assert_allclose(v, v_ref, atol=1e-6, rtol=1e-6)
    z = project_gradient(torch.from_numpy(g), torch.from_numpy(M), margin=margin, ridge=ridge).numpy()
    np.testing.assert_allclose(z, z_ref, atol=1e-6 * max(1.0, np.abs(z_ref).max()), rtol=1e-6)
    # KKT: M z = lambda - ridge v with lambda >= 0, so every inner product is >= -ridge * v_k
    assert np.all(M @ z >= -ridge * v - 1e-8 * np.abs(M).sum(1) * np.abs(z).max())
    assert np.all(v >= margin - 1e-12)


def test_projection_repairs_the_paper_note_example():
    """Three memory gradients all conflicting with g: after projection the inner products are ~ -ridge * v."""
    rng = np.random.default_rng(11)
    M = rng.normal(size=(3, 40))
    g = -3.0 * M.sum(0)
    assert np.all(M @ g < 0)
    v = solve_gem_dual(M, g, margin=0.0, ridge=1e-3)
    z = v @ M + g
    assert np.all(M @ z > -1e-3 * v - 1e-9)
    # the projection is the closest such vector: any feasible point of M z >= 0 is no closer to g
    assert np.linalg.norm(z - g) <= np.linalg.norm(g) + 1e-9  # z = 0 is feasible


@pytest.mark.parametrize("ridge", [1e-3, 0.0])
def test_rank_deficient_memory_matrix(ridge):
    rng = np.random.default_rng(3)
    row = rng.normal(size=(1, 30))
    M = np.vstack([row, row, -0.5 * row + 0.0, 2 * row, rng.normal(size=(1, 30))])  # rank 2, five memories
    g = rng.normal(size=30) - 2 * row[0]
    v = solve_gem_dual(M, g, margin=0.0, ridge=ridge)
    assert np.all(np.isfinite(v)) and np.all(v >= -1e-12)
    z = v @ M + g
    assert np.all(M @ z >= -ridge * v - 1e-9)
    if ridge > 0:
        np.testing.assert_allclose(v, _quadprog_projection(M, g, 0.0, ridge)[0], atol=1e-6)
    else:  # quadprog cannot factor a singular P; the projection itself is unique: compare with a tiny ridge
        with pytest.raises(ValueError):
            _quadprog_projection(M, g, 0.0, 0.0)
        np.testing.assert_allclose(z, _quadprog_projection(M, g, 0.0, 1e-10)[1], atol=1e-5)


def test_quadprog_solver_option_and_bad_inputs():
    rng = np.random.default_rng(5)
    M, g = rng.normal(size=(2, 9)), rng.normal(size=9)
    np.testing.assert_allclose(solve_gem_dual(M, g, solver="quadprog"), solve_gem_dual(M, g), atol=1e-8)
    with pytest.raises(ValueError, match="columns"):
        solve_gem_dual(M, g[:5])
    with pytest.raises(ValueError, match="finite"):
        solve_gem_dual(M, np.full(9, np.nan))
    with pytest.raises(ValueError, match="solver"):
        solve_gem_dual(M, g, solver="cvx")


def test_gem_optimizer_step_applies_the_projected_gradient():
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    x_mem, y_mem = torch.randn(8, 4), torch.randn(8, 1)
    x, y = torch.randn(6, 4), -5 * torch.randn(6, 1)

    def memory_loss(batch):
        xb, yb = batch
        return ((model(xb) - yb) ** 2).mean()

    lr = 0.1
    opt = GEMOptimizer(torch.optim.SGD(model.parameters(), lr=lr), memory_loss, margin=0.0, ridge=1e-3)
    opt.add_memory([(x_mem[:4], y_mem[:4]), (x_mem[4:], y_mem[4:])])
    params = list(model.parameters())
    before = [p.detach().clone() for p in params]
    # reference gradients by hand
    g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(((model(x) - y) ** 2).mean(), params)])
    gm = torch.cat([t.reshape(-1) for t in torch.autograd.grad(((model(x_mem) - y_mem) ** 2).mean(), params)])
    assert float(g @ gm) < 0, "the test needs a conflicting memory"
    expected = project_gradient(g, gm[None], margin=0.0, ridge=1e-3)

    opt.zero_grad()
    ((model(x) - y) ** 2).mean().backward()
    opt.step()
    delta = torch.cat([(b - p.detach()).reshape(-1) for b, p in zip(before, params)]) / lr
    torch.testing.assert_close(delta, expected, atol=1e-5, rtol=1e-5)
    assert opt.steps == 1 and opt.projections == 1
    # scheduler and state_dict act on the wrapped optimiser
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
    sched.step(1.0), sched.step(2.0)
    assert opt.base.param_groups[0]["lr"] == pytest.approx(lr * 0.5)


def _ddp_worker(rank, world, init_file, out_file):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model, x, y, mem = _ddp_problem()
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = GEMOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                       lambda b: ((model(b[0]) - b[1]) ** 2).mean(), margin=0.5, ridge=1e-3)
    opt.add_memory(mem)
    half = slice(rank * 4, rank * 4 + 4)  # each rank: half of the batch; DDP averages the gradients
    for _ in range(3):
        opt.zero_grad()
        ((ddp(x[half]) - y[half]) ** 2).mean().backward()
        opt.step()
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, f"{out_file}.{rank}")
    dist.barrier()  # no rank tears gloo down while the other still uses it
    dist.destroy_process_group()


def _ddp_problem():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 3, generator=g), -4 * torch.randn(8, 2, generator=g)
    mem = [(torch.randn(5, 3, generator=g), torch.randn(5, 2, generator=g)) for _ in range(2)]
    return model, x, y, mem


def test_gem_under_ddp_matches_one_process(tmp_path):
    """Two gloo ranks (memory gradients all-reduced, same QP on every rank) end with the weights of one process."""
    import torch.multiprocessing as mp

    out = str(tmp_path / "ddp.pt")
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), out), nprocs=2, join=True)
    model, x, y, mem = _ddp_problem()
    opt = GEMOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                       lambda b: ((model(b[0]) - b[1]) ** 2).mean(), margin=0.5, ridge=1e-3)
    opt.add_memory(mem)
    for _ in range(3):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
    assert opt.projections > 0
    rank0, rank1 = torch.load(f"{out}.0"), torch.load(f"{out}.1")
    for k, v in model.state_dict().items():
        torch.testing.assert_close(rank0[k], rank1[k], atol=0, rtol=0)
        torch.testing.assert_close(rank0[k], v, atol=1e-6, rtol=1e-5)
