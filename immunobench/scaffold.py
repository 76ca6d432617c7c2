"""``immunobench new defense NAME``: a documented defense file that runs as written.

The template is a real, small defense (gradient ascent on the targets' diffusion loss over the
cross-attention K/V, with a prior term on the regularization data): it passes ``check-plugin``
and runs through the grid unchanged, so an author starts from something that works and replaces
its update rule.
"""
from __future__ import annotations

import keyword
import re
from pathlib import Path

from .errors import UserError

TEMPLATE = '''"""{title}: <one line on what the defense does>.

<Cite the paper (title, venue, year) and say where this file differs from its released code and why.>
Started from `immunobench new defense {name}`: its update rule below is the template's placeholder
(gradient ascent on the targets' diffusion loss over the cross-attention K/V, with a prior term on
the regularization data). Replace it with yours; keep the signature, the Config and `version`.

    immunobench check-plugin {file}
    immunobench run --plugin {file} --defense {name} --task relearn-style --groups 2c-1
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from immunobench.diffusion import diffusion_loss, encode_images, encode_prompts, select_parameters
from immunobench.plugins import Defense, Immunized, register_defense


@dataclass(frozen=True)
class {cls}Config:
    """Every field needs a default (the paper's, cited) and help text: `immunobench show defense {name}`."""

    lr: float = field(default=1e-4, metadata={{"help": "step size of the ascent on the targets' loss"}})
    steps: int = field(default=20, metadata={{"help": "optimizer steps"}})
    prior_weight: float = field(default=1.0, metadata={{
        "help": "weight of the regularization data's diffusion loss (keeps the model useful); 0 = none"}})
    parameters: str = field(default="xattn-kv", metadata={{
        "help": "which UNet tensors change (immunobench.diffusion.select_parameters: xattn-kv, xattn, attn, unet)"}})
    seed: int = field(default=0, metadata={{"help": "seed of the noise and timesteps (the runner sets it per cell)"}})


@register_defense("{name}")
class {cls}(Defense):
    """<One line: the defense's update rule.>"""

    version = "0.1"  # part of every cache key: bump it whenever the results would change
    Config = {cls}Config
    # per (backbone, task kind) overrides of the defaults, e.g. {{"tiny-sd": {{"lr": 1e-3}}}}
    presets: dict[str, dict] = {{}}
    needs_regularization = True  # the runner then draws the card's regularization images for `data`

    def immunize(self, model, data, cfg: {cls}Config = {cls}Config()) -> Immunized:
        """`data` (immunobench.data.DefenseData) is all a defense may see: `data.targets`, their
        defense images and prompts (`data.images[c].images`, `.prompts`) and the regularization data
        (`data.regularization`) -- never the attack split, the references or the scored others."""
        concepts = [c for c in data.targets if c in data.images]
        if not concepts:
            raise ValueError(f"{name}: no defense images for any target of group {{data.group}}")
        g = torch.Generator().manual_seed(cfg.seed)
        unet = copy.deepcopy(model.unet).requires_grad_(False)
        trained = {{k: p.requires_grad_(True) for k, p in select_parameters(unet, cfg.parameters).items()}}
        with torch.no_grad():
            harmful = (torch.cat([encode_images(model, data.images[c].images) for c in concepts]),
                       torch.cat([encode_prompts(model, data.images[c].prompts) for c in concepts]))
            prior = None
            if cfg.prior_weight and data.regularization is not None:
                prior = (encode_images(model, data.regularization.images),
                         encode_prompts(model, data.regularization.prompts))

        opt = torch.optim.Adam(trained.values(), lr=cfg.lr)
        task = self.progress.task(f"{name} {{data.group}}", total=cfg.steps) if self.progress else None
        history = []
        unet.train()
        for step in range(cfg.steps):
            loss = -diffusion_loss(unet, *harmful, model.scheduler, generator=g)  # unlearn the targets
            if prior is not None:
                loss = loss + cfg.prior_weight * diffusion_loss(unet, *prior, model.scheduler, generator=g)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{name}: loss is {{loss.item()}} at step {{step + 1}}; lower {name}.lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history.append(float(loss.detach()))
            if task:
                task.advance(loss=history[-1])
        unet.eval()
        # only the tensors that changed; `info` is stored with the artifact and shown in the manifest
        return Immunized(unet={{k: p.detach().clone() for k, p in trained.items()}},
                         info={{"loss_first_last": [history[0], history[-1]] if history else [], "tensors": len(trained)}})
'''

_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


def new_defense(name: str, out: str | Path = ".", force: bool = False) -> Path:
    """Writes ``<out>/<name>.py`` (dashes become underscores in the file name) → its path."""
    if not _NAME.match(name):
        raise UserError(f"new defense {name!r}: use lower-case letters, digits, '-' or '_', starting with a letter")
    module = name.replace("-", "_")
    if keyword.iskeyword(module):
        raise UserError(f"new defense {name!r}: {module} is a Python keyword; choose another name")
    from .plugins import DEFENSES

    if name in DEFENSES.names():
        raise UserError(f"new defense {name!r}: a defense of that name is registered already; choose another name")
    file = Path(out) / f"{module}.py"
    if file.exists() and not force:
        raise UserError(f"new defense: {file} exists; pass --force to overwrite it or choose another name")
    file.parent.mkdir(parents=True, exist_ok=True)
    cls = "".join(part.capitalize() for part in re.split(r"[-_]", name))
    file.write_text(TEMPLATE.format(name=name, cls=cls, file=file.name, title=cls))
    return file
