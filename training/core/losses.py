"""Preference losses as pure functions of sequence log-probabilities.

Every function takes per-pair tensors of shape ``(B,)`` and returns per-pair losses of shape
``(B,)``; reduction (and per-pair weights) happen in `preference_loss`. Notation: for pair ``i``,
``h_i = (log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))``, the difference of
the chosen (w) and rejected (l) log-ratios.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def sigmoid_loss(
    chosen_logratios: torch.Tensor,
    rejected_logratios: torch.Tensor,
    beta: float,
    label_smoothing: torch.Tensor | None = None,
) -> torch.Tensor:
    """DPO loss, Rafailov et al. 2023, eq. 7: ``-log sigmoid(beta * h)``.

    With ``label_smoothing`` it is conservative DPO (Mitchell 2023, "A note on DPO with noisy
    preferences", eq. 3): the label of pair ``i`` is taken to be wrong with probability
    ``eps_i``, so the loss is the cross-entropy against the soft target ``1 - eps_i``:
    ``-(1 - eps_i) * log sigmoid(beta * h_i) - eps_i * log sigmoid(-beta * h_i)``. Its gradient
    vanishes at ``sigmoid(beta * h_i) = 1 - eps_i`` instead of pushing ``h_i`` to infinity;
    ``eps_i = 0.5`` pulls ``h_i`` to 0 (a tie).

    Args:
        chosen_logratios: ``(B,)`` ``log pi(y_w|x) - log ref(y_w|x)``, summed over tokens.
        rejected_logratios: ``(B,)`` the same for the rejected completion.
        beta: KL strength.
        label_smoothing: ``(B,)`` optional per-pair ``eps_i`` in ``[0, 1]``; None is all zeros.

    Returns:
        ``(B,)`` per-pair losses.
    """
    z = beta * (chosen_logratios - rejected_logratios)  # (B,)
    if label_smoothing is None:
        return -F.logsigmoid(z)
    eps = label_smoothing.to(z.dtype)  # (B,)
    return -(1.0 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)


def ipo_loss(
    chosen_logratios: torch.Tensor,
    rejected_logratios: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """IPO loss, Azar et al. 2023, eq. 17: ``(h - 1 / (2 * beta))**2``, beta playing tau.

    Log-ratios are averaged per completion token before taking ``h``, so the squared target does
    not scale with completion length (the normalisation the IPO authors use, as TRL does).

    Args:
        chosen_logratios: ``(B,)`` summed chosen log-ratios.
        rejected_logratios: ``(B,)`` summed rejected log-ratios.
        chosen_lengths: ``(B,)`` completion tokens in each chosen completion.
        rejected_lengths: ``(B,)`` completion tokens in each rejected completion.
        beta: regularisation strength tau.

    Returns:
        ``(B,)`` per-pair losses.
    """
    h = chosen_logratios / chosen_lengths.clamp(
        min=1
    ) - rejected_logratios / rejected_lengths.clamp(min=1)
    return (h - 1.0 / (2.0 * beta)) ** 2


def hinge_loss(
    chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, beta: float
) -> torch.Tensor:
    """Hinge loss (the SLiC-HF calibration loss, Zhao et al. 2023, on reference log-ratios).

    ``max(0, 1 - beta * h)``

    Args:
        chosen_logratios: ``(B,)`` summed chosen log-ratios.
        rejected_logratios: ``(B,)`` summed rejected log-ratios.
        beta: scale of ``h`` (the margin is ``1 / beta`` in log-ratio units).

    Returns:
        ``(B,)`` per-pair losses.
    """
    return torch.relu(1.0 - beta * (chosen_logratios - rejected_logratios))


def robust_loss(
    chosen_logratios: torch.Tensor,
    rejected_logratios: torch.Tensor,
    beta: float,
    epsilon: float,
) -> torch.Tensor:
    """Robust DPO (rDPO, Chowdhury et al. 2024, sec. 3): unbiased under label flips at rate epsilon.

    ``((1 - eps) * -log sigmoid(beta * h) - eps * -log sigmoid(-beta * h)) / (1 - 2 * eps)``

    Args:
        chosen_logratios: ``(B,)`` summed chosen log-ratios.
        rejected_logratios: ``(B,)`` summed rejected log-ratios.
        beta: KL strength.
        epsilon: label-flip rate in ``[0, 0.5)``.

    Returns:
        ``(B,)`` per-pair losses.
    """
    z = beta * (chosen_logratios - rejected_logratios)
    clean = -(1.0 - epsilon) * F.logsigmoid(z)
    flipped = -epsilon * F.logsigmoid(-z)
    return (clean - flipped) / (1.0 - 2.0 * epsilon)


@dataclass
class LossOutput:
    """The batch loss and the per-pair quantities the metrics are built from."""

    loss: torch.Tensor  # () weighted mean of per-pair losses
    losses: torch.Tensor  # (B,) unweighted per-pair losses
    chosen_rewards: torch.Tensor  # (B,) beta * chosen log-ratio, detached
    rejected_rewards: torch.Tensor  # (B,) beta * rejected log-ratio, detached


def preference_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    loss: str = "sigmoid",
    beta: float = 0.1,
    epsilon: float = 0.0,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    label_smoothing: torch.Tensor | None = None,
) -> LossOutput:
    """Dispatch to one of the losses above and reduce to a scalar.

    Args:
        policy_chosen_logps: ``(B,)`` ``log pi(y_w|x)`` summed over completion tokens.
        policy_rejected_logps: ``(B,)`` ``log pi(y_l|x)``.
        ref_chosen_logps: ``(B,)`` ``log ref(y_w|x)``.
        ref_rejected_logps: ``(B,)`` ``log ref(y_l|x)``.
        loss: "sigmoid", "ipo", "hinge" or "robust".
        beta: KL strength (tau for IPO).
        epsilon: label-flip rate for "robust".
        chosen_lengths: ``(B,)`` completion token counts, needed by "ipo".
        rejected_lengths: ``(B,)`` completion token counts, needed by "ipo".
        weights: ``(B,)`` optional per-pair weights; pair ``i`` contributes ``w_i * loss_i``.
        label_smoothing: ``(B,)`` optional per-pair probability that the label is wrong
            (conservative DPO); only the "sigmoid" loss takes it.

    Returns:
        `LossOutput`, whose ``loss`` is ``mean_i(w_i * loss_i)``.
    """
    chosen_logratios = policy_chosen_logps - ref_chosen_logps  # (B,)
    rejected_logratios = policy_rejected_logps - ref_rejected_logps  # (B,)
    if label_smoothing is not None and loss != "sigmoid" and bool(label_smoothing.any()):
        raise ValueError(f"per-pair label smoothing needs the sigmoid loss, not {loss!r}")
    if loss == "sigmoid":
        losses = sigmoid_loss(chosen_logratios, rejected_logratios, beta, label_smoothing)
    elif loss == "ipo":
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError("the IPO loss needs chosen_lengths and rejected_lengths")
        losses = ipo_loss(
            chosen_logratios, rejected_logratios, chosen_lengths, rejected_lengths, beta
        )
    elif loss == "hinge":
        losses = hinge_loss(chosen_logratios, rejected_logratios, beta)
    elif loss == "robust":
        losses = robust_loss(chosen_logratios, rejected_logratios, beta, epsilon)
    else:
        raise ValueError(f"unknown loss {loss!r}")
    weighted = losses if weights is None else losses * weights.to(losses.dtype)
    return LossOutput(
        loss=weighted.mean(),
        losses=losses.detach(),
        chosen_rewards=(beta * chosen_logratios).detach(),
        rejected_rewards=(beta * rejected_logratios).detach(),
    )
