"""Ada2I: encoders -> AFW -> flatten -> AMW head, with its losses, predictions and disparity ratios."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..checkpointing.pretrained import load_pretrained, push_to_hub, save_pretrained
from ..config import Ada2IConfig
from ..devices import resolve_precision
from ..memory import check_model_fits
from ..modalities import in_order
from .afw import AFW
from .amw import ClassifierHead
from .batch import Batch
from .bf16_weights import Bf16Weights, matmul_weights
from .encoders import build_encoder, encode_all
from .rows import real_rows


@dataclass
class Ada2IOutput:
    """What one forward pass gives. N counts real utterances, dialogue after dialogue.

    ``labels`` and ``scores`` (the disparity scores s_m of SPEC §3, no gradient) are present when the
    batch has labels; turning scores into ratios and coefficients is training policy (``balance``).
    """

    log_probs: Tensor  # [N, C] fused
    unimodal_logits: Tensor  # [M, N, C] un-normalised z_m W_m^T + b/M
    feature_loss: Tensor  # scalar: per AFW layer the mean over modalities, summed over layers
    labels: Tensor | None = None  # [N]
    scores: Tensor | None = None  # [M]


@dataclass
class Prediction:
    """What :meth:`Ada2I.predict` gives: per real utterance, the label, the class probabilities and
    each modality's exact share of the fused logits (``contributions.sum(1) + bias`` are the logits
    the probabilities are the softmax of, to float rounding; so are
    ``sum(contributions_by_modality().values()) + bias``)."""

    labels: Tensor  # [N] class indices; label_names() gives their names
    probabilities: Tensor  # [N, C]
    lengths: Tensor  # [B]; split the N rows per dialogue with torch.split(x, lengths.tolist())
    contributions: Tensor | None = None  # [N, M, C], modalities in the order of ``modalities``, bias excluded
    bias: Tensor | None = None  # [C], shared by every utterance
    modalities: str = ""  # names contributions' modality axis: its letters in order, e.g. "at"
    class_names: tuple[str, ...] | None = None  # names the class axis (the model's config.class_names)

    def label_names(self) -> list[str]:
        """The predicted class of every utterance, by name."""
        if self.class_names is None:
            raise ValueError("this model's classes are unnamed (its config has no class_names): labels holds "
                             "class indices only")
        return [self.class_names[i] for i in self.labels.tolist()]

    def contributions_by_modality(self) -> dict[str, Tensor]:
        """Each modality's share of the logits, [N, C], keyed by its letter (``a``, ``t``, ``v``)."""
        if self.contributions is None:
            raise ValueError("this prediction holds no contributions")
        return dict(zip(self.modalities, self.contributions.unbind(1)))


def total_loss(terms: dict[str, Tensor]) -> Tensor:
    """The sum of :meth:`Ada2I.loss_terms`."""
    return torch.stack(list(terms.values())).sum()


class Ada2I(nn.Module):
    """The Ada2I model of SPEC §2. ``forward`` takes a :class:`~ada2i_fast.modules.batch.Batch`."""

    def __init__(self, config: Ada2IConfig) -> None:
        super().__init__()
        config.validate()
        check_model_fits(config)  # before any layer is built
        self.config = config
        self.encoders = nn.ModuleDict({m: build_encoder(config.input_dims[m], config) for m in config.modalities})
        self.afw = AFW(
            config.n_modalities,
            config.hidden,
            config.rank,
            config.beta,
            config.mmt_nlayers,
            config.drop_rate,
            config.semantics,
        )
        self.head = ClassifierHead(config)
        self._bf16_weights = Bf16Weights(matmul_weights(self))

    def restricted_to(self, modalities: str) -> "Ada2I":
        """A copy of this model that uses only ``modalities`` (a subset of its own): the other
        modalities are dropped from the input, not zeroed. Every part of Ada2I allows it: each
        encoder sees one modality, the AFW chain product runs over the modalities present (SPEC §2;
        with one left it is empty) and the head's fused logits sum the present modalities' terms
        and the bias. The copy keeps this model's weights for what remains and shares no storage."""
        kept = in_order(modalities)
        foreign = [m for m in modalities if m not in self.config.modalities]
        if foreign or not kept or len(kept) != len(modalities):
            raise ValueError(f"modalities {modalities!r}: expected distinct letters among the model's "
                             f"{self.config.modalities!r}")
        index = torch.tensor([self.config.modalities.index(m) for m in kept])
        config = self.config.replace(modalities=kept, input_dims={m: self.config.input_dims[m] for m in kept})
        n_classes, hidden = self.config.num_classes, self.config.hidden
        state = {}
        for name, value in self.state_dict().items():
            if name.startswith("encoders."):
                if name.split(".")[1] in kept:
                    state[name] = value
            elif name.startswith("afw."):  # stacked along a leading modality axis
                state[name] = value.index_select(0, index.to(value.device))
            elif name == "head.fc_out.weight":  # column block m belongs to modality m
                blocks = value.reshape(n_classes, self.config.n_modalities, hidden)
                state[name] = blocks.index_select(1, index.to(value.device)).reshape(n_classes, -1)
            else:
                state[name] = value
        restricted = Ada2I(config).to(next(self.parameters()).device)
        restricted.load_state_dict(state)
        return restricted.train(self.training)

    @property
    def bf16_weights(self) -> Bf16Weights:
        """The bfloat16 copies of the weights that only matmuls read (``bf16_weights``), for the
        model's current parameters."""
        return self._bf16_weights.following(matmul_weights(self))

    def encoder_parameters(self) -> list[list[nn.Parameter]]:
        """Encoder parameters grouped by modality, in modality order (what gradient modulation touches)."""
        return [list(encoder.parameters()) for encoder in self.encoders.values()]

    def check_batch(self, batch: Batch) -> None:
        """Raise ``ValueError`` naming the modality or field when ``batch`` does not fit this model."""
        for m in self.config.modalities:
            if m not in batch.features:
                raise ValueError(f"batch lacks modality {m!r}; the model uses {self.config.modalities!r}")
            found = batch.features[m].shape[-1]
            expected = self.config.input_dims[m]
            if found != expected:
                raise ValueError(f"modality {m!r}: expected feature dim {expected}, found {found}")
        if batch.label_range is not None:
            low, high = batch.label_range
            if low < 0 or high >= self.config.num_classes:
                raise ValueError(
                    f"labels out of range: expected 0..{self.config.num_classes - 1}, found {low}..{high}"
                )

    def forward(self, batch: Batch) -> Ada2IOutput:
        """The SPEC §2 forward pass of ``batch``: encoders -> AFW -> the real utterances -> the AMW head."""
        self.check_batch(batch)
        h = encode_all(self.encoders, batch)
        h, feature_loss = self.afw(h, batch.mask, batch.flat_index)
        m, b, t, hidden = h.shape
        z = real_rows(h.reshape(m, b * t, hidden), batch.flat_index, 1)
        labels = batch.flat_labels() if batch.labels is not None else None
        fused, unimodal, scores = self.head(z, labels)
        return Ada2IOutput(F.log_softmax(fused, dim=-1), unimodal, feature_loss, labels, scores)

    def loss_terms(self, output: Ada2IOutput) -> dict[str, Tensor]:
        """``classification`` (L_cls), ``feature`` (L_feature) and ``modal`` (weighted L_modal_aux)."""
        if output.labels is None:
            raise ValueError("the loss needs a batch with labels")
        terms = {
            "classification": F.nll_loss(output.log_probs, output.labels),
            "feature": output.feature_loss,
        }
        if self.config.lambda_modal:
            terms["modal"] = self.config.lambda_modal * self.unimodal_losses(output).sum()
        return terms

    @staticmethod
    def unimodal_losses(output: Ada2IOutput) -> Tensor:
        """[M] cross-entropy of each modality's un-normalised logits (L_modal_aux's terms)."""
        n_mod, n, n_classes = output.unimodal_logits.shape
        losses = F.cross_entropy(
            output.unimodal_logits.reshape(n_mod * n, n_classes), output.labels.repeat(n_mod), reduction="none"
        )
        return losses.reshape(n_mod, n).mean(1)

    def loss(self, output: Ada2IOutput) -> Tensor:
        """L = L_cls + L_feature (+ lambda_modal * L_modal_aux)."""
        return total_loss(self.loss_terms(output))

    @torch.inference_mode()
    def predict(self, batch: Batch, precision: str = "fp32") -> Prediction:
        """Labels, class probabilities and each modality's logit contributions per real utterance, in eval mode.

        ``precision``: ``"bf16"`` runs the forward pass under bfloat16 autocast, ``"auto"`` picks it
        where the device has bfloat16 arithmetic (``devices.resolve_precision``); outputs are float32.
        In bf16 the weights autocast would cast on every call are read from :attr:`bf16_weights`,
        cast once and kept until a weight changes.
        """
        bf16 = resolve_precision(precision, batch.device) == "bf16"
        head_inputs = []
        # The head's input Z [M, N, H] is caught on its way in, so forward stays the one path to it.
        hook = self.head.register_forward_pre_hook(lambda head, args: head_inputs.append(args[0]))
        was_training = self.training
        self.eval()
        try:
            with torch.autocast(batch.device.type, dtype=torch.bfloat16, enabled=bf16):
                output = functional_call(self, self.bf16_weights.current(), (batch,)) if bf16 else self(batch)
                probabilities = output.log_probs.float().exp()
                contributions = self.head.contributions(head_inputs[0]).float().transpose(0, 1)
        finally:
            self.train(was_training)
            hook.remove()
        bias = self.head.fc_out.bias.detach().clone()
        return Prediction(probabilities.argmax(-1), probabilities, batch.lengths, contributions, bias,
                          self.config.modalities, self.config.class_names)

    def save_pretrained(self, folder, metadata: dict | None = None, featuriser=None):
        """Write ``config.json`` (with ``id2label``) + ``model.safetensors`` into ``folder`` (Hugging Face's
        layout; see ``pretrained``), and a copy of ``featuriser`` (its corpus's ``data.featuriser.Featuriser``,
        so that the folder alone predicts on new conversations); returns the folder."""
        return save_pretrained(self, folder, metadata, featuriser)

    @classmethod
    def from_pretrained(cls, folder) -> "Ada2I":
        """The model of a folder written by :meth:`save_pretrained` (nothing is unpickled), in eval mode
        (dropout off; ``.train()`` to train it further). ``ConversationPipeline.from_pretrained`` adds the
        featuriser, for new conversations."""
        return load_pretrained(folder, cls)[0].eval()

    def push_to_hub(self, repo_id: str, folder, **upload_options) -> str:
        """:meth:`save_pretrained` into ``folder``, then upload it to the Hugging Face Hub as ``repo_id``."""
        return push_to_hub(self.save_pretrained(folder), repo_id, **upload_options)

    @classmethod
    def from_reference_checkpoint(cls, path, **overrides) -> "Ada2I":
        """Load a checkpoint written by the authors' training script; see ``reference_checkpoint``."""
        from ..checkpointing.reference_checkpoint import load_reference_checkpoint

        return load_reference_checkpoint(cls, path, **overrides)
