"""Independent answers that the meta-gradients of maml_vpg.py, fomaml_vpg.py and alchemy_maml.py are
checked against: a bandit with a closed-form MAML objective, and MAML by classic higher-order autograd.

The bandit: a one-step, three-armed bandit whose expected return has a closed form.
pi = softmax(theta) over 3 arms with deterministic rewards r, so J(theta) = softmax(theta) . r. An inner
step on the loss -J moves theta to theta + alpha * grad J(theta); MAML's objective after N steps is J of
the N-times adapted parameters, differentiated exactly by autograd on the closed form.
"""

import math

import torch
import torch.nn as nn

REWARDS = torch.tensor([1.0, -0.5, 0.25], dtype=torch.float64)
THETA = torch.tensor([0.3, -0.2, 0.6], dtype=torch.float64)
ALPHA = 1.5


class BanditPolicy(nn.Module):
    """Logits theta whatever the observation: one linear layer with zero weights on a zero observation, built like
    the scripts' Policy (net, obs_mid, obs_half_range) so that their batched forward runs it too. The weights'
    gradient is 0 (the input is 0), so the bias net.0.bias alone moves: the bandit's theta."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.register_buffer("obs_mid", torch.zeros(1, dtype=logits.dtype))
        self.register_buffer("obs_half_range", torch.ones(1, dtype=logits.dtype))
        self.net = nn.Sequential(nn.Linear(1, len(logits), dtype=logits.dtype))
        with torch.no_grad():
            self.net[0].weight.zero_()
            self.net[0].bias.copy_(logits)

    def forward(self, obs):
        return self.net((obs - self.obs_mid) / self.obs_half_range)


def exact_meta_gradient(num_steps: int, first_order: bool = False) -> torch.Tensor:
    """d/d theta of J(theta_N), theta_{k+1} = theta_k + alpha * grad J(theta_k), by autograd; first_order:
    grad J at theta_N instead (what FOMAML estimates)."""
    theta = THETA.clone().requires_grad_(True)

    def expected_return(logits):
        return torch.softmax(logits, -1) @ REWARDS

    adapted = theta
    for _ in range(num_steps):
        (step,) = torch.autograd.grad(expected_return(adapted), adapted, create_graph=True)
        adapted = adapted + ALPHA * step
    wrt = adapted if first_order else theta
    (gradient,) = torch.autograd.grad(expected_return(adapted), wrt)
    return gradient


def sample_bandit_batch(task_logits: torch.Tensor, samples: int, generator: torch.Generator) -> dict:
    """`samples` pulls per task from softmax(task_logits) (tasks, 3); the advantage is the raw reward."""
    tasks = task_logits.shape[0]
    actions = torch.multinomial(torch.softmax(task_logits.detach(), -1), samples, replacement=True, generator=generator)
    return {
        "obs": torch.zeros(tasks, samples, 1, dtype=torch.float64),
        "actions": actions,
        "advantages": REWARDS[actions],
        "mask": torch.ones(tasks, samples, dtype=torch.float64),
    }


def estimated_meta_gradients(adapt, meta_gradient, num_steps: int, groups: int, tasks: int, samples: int,
                             seed: int = 0):
    """Run a script's sampling-adaptation-meta-gradient pipeline on the bandit; one estimate (mean over
    `tasks` independent tasks) per group. Returns (groups, 3) estimates of -(meta-gradient of the loss),
    i.e. of grad J.

    adapt(model, task_params, batch, lr) -> every task's adapted params (task_params with a leading task dim, theta
    expanded over the tasks at first, as the scripts' sample_and_adapt starts): the script's inner step over all
    tasks, e.g. maml_vpg.inner_update.
    meta_gradient(model, params, adapted_params, inner_batches, validation_batch, lr) -> (gradient dict,
    loss): the script's meta-gradient, wrapped to take every input an algorithm may use (a script takes only the
    ones it uses)."""
    generator = torch.Generator().manual_seed(seed)
    model = BanditPolicy(THETA)
    params = dict(model.named_parameters())
    estimates = []
    for _ in range(groups):
        task_params = {name: p.expand((tasks,) + p.shape) for name, p in params.items()}
        inner_batches = []
        for _ in range(num_steps):
            batch = sample_bandit_batch(task_params["net.0.bias"], samples, generator)
            inner_batches.append(batch)
            task_params = adapt(model, task_params, batch, ALPHA)
        validation_batch = sample_bandit_batch(task_params["net.0.bias"], samples, generator)
        grads, _ = meta_gradient(model, params, task_params, inner_batches, validation_batch, ALPHA)
        estimates.append(-grads["net.0.bias"] / tasks)  # the loss is -J: flip the sign
    return torch.stack(estimates)


def task_slice(batch: dict, task: int) -> dict:
    """One task's samples of a batch whose leading dimension is the task."""
    return {key: value[task] for key, value in batch.items()}


def classic_maml_meta_gradient(model, params: dict, inner_batches: list, validation: dict, lr: float,
                               first_order: bool = False):
    """MAML's meta-gradient the classic way, one task at a time: N inner SGD steps on the LVC surrogate
    written out, each differentiated with create_graph=True, then plain autograd of the validation loss
    -mean(log pi * A) back to the initial parameters. Batches are (tasks, samples, ...) dicts with obs,
    actions, advantages, mask, and optionally action_mask (tasks, samples, actions), the valid actions
    (alchemy_maml's invalid-action masking). first_order: FOMAML's instead, the validation loss's gradient
    at the adapted parameters (no graph through the inner steps). Returns ({name: gradient summed over
    tasks}, summed validation loss)."""

    def log_prob(adapted, batch):
        logits = torch.func.functional_call(model, dict(zip(params, adapted)), (batch["obs"],))
        if "action_mask" in batch:  # an invalid action gets probability 0 (exp(-1e8 - max) underflows to 0)
            logits = logits.masked_fill(~batch["action_mask"], -1e8)
        return torch.log_softmax(logits, -1).gather(-1, batch["actions"][:, None]).squeeze(-1)

    def masked_mean(x, batch):
        return (x * batch["advantages"] * batch["mask"]).sum() / batch["mask"].sum()

    tasks = validation["actions"].shape[0]
    gradients = {name: torch.zeros_like(p) for name, p in params.items()}
    total_loss = 0.0
    for task in range(tasks):
        adapted = list(params.values())
        for batch in inner_batches:
            batch = task_slice(batch, task)
            logp = log_prob(adapted, batch)
            lvc = -masked_mean(torch.exp(logp - logp.detach()), batch)
            steps = torch.autograd.grad(lvc, adapted, create_graph=not first_order)
            adapted = [p - lr * g for p, g in zip(adapted, steps)]
        if first_order:  # theta_N as a leaf: the gradient stops there
            adapted = [p.detach().requires_grad_(True) for p in adapted]
        batch = task_slice(validation, task)
        outer = -masked_mean(log_prob(adapted, batch), batch)
        total_loss += outer.item()
        for name, g in zip(params, torch.autograd.grad(outer, adapted if first_order else list(params.values()))):
            gradients[name] += g
    return gradients, total_loss


def assert_meta_gradient_matches_classic(meta_gradient, model, inner_batches: list, validation: dict,
                                         lr: float) -> dict:
    """Assert that a script's MAML meta-gradient (all tasks at once) equals
    classic_maml_meta_gradient on the same batches: gradients to rtol 1e-4, the summed loss to 1e-5.

    meta_gradient(params, inner_batches, validation, lr) -> (gradient dict summed over tasks, summed loss), the
    script's inner steps and meta-gradient as its loop composes them.
    Returns the classic gradient, for further comparisons (e.g. that FOMAML's differs from it)."""
    params = dict(model.named_parameters())
    grads, loss = meta_gradient(params, inner_batches, validation, lr)
    expected, expected_loss = classic_maml_meta_gradient(model, params, inner_batches, validation, lr)
    for name in params:
        torch.testing.assert_close(grads[name], expected[name], rtol=1e-4, atol=1e-6)
    assert math.isclose(loss.item(), expected_loss, rel_tol=1e-5), (loss.item(), expected_loss)
    return expected


def assert_first_order_matches_per_task_gradients(grads: dict, loss, model, adapted: dict, validation: dict,
                                                  task_loss) -> None:
    """Assert that a script's first-order meta-gradient `grads` (and its summed `loss`) equals the sum over tasks
    of plain autograd gradients of `task_loss(task_model, task_batch)`, where task_model is a copy of model
    holding task i's adapted parameters: FOMAML's update written one task at a time, without torch.func."""
    from copy import deepcopy

    expected = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    expected_loss = 0.0
    for task in range(len(next(iter(adapted.values())))):
        task_model = deepcopy(model)
        with torch.no_grad():
            for name, p in task_model.named_parameters():
                p.copy_(adapted[name][task])
        value = task_loss(task_model, task_slice(validation, task))
        value.backward()
        expected_loss += value.item()
        for name, p in task_model.named_parameters():
            expected[name] += p.grad
    for name in expected:
        torch.testing.assert_close(grads[name], expected[name])
    assert math.isclose(loss.item(), expected_loss, rel_tol=1e-5), (loss.item(), expected_loss)
