"""Task cards: flat, versioned YAML (lm-evaluation-harness style), validated into frozen models.

A card names its concepts, the concept groups of MIMA's Table 6, the prompt templates, the
start model, the default attacks and the reporting step. ``include: other.yaml`` inherits a
sibling's keys (shallow; the including card wins). A malformed card is an error naming the
file, the field and the fix; nothing is skipped.
"""
from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, ValidationError, model_validator

from .errors import CardError, UnknownNameError



def _builtin_dir() -> Path:
    import immunobench.tasks

    return Path(immunobench.tasks.__file__).parent


def with_article(noun: str) -> str:
    """``"apple"`` → ``"an apple"``, ``"church"`` → ``"a church"``."""
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Concept(_Strict):
    name: str = Field(description="how prompts name it, e.g. 'Claude Monet', 'chain saw'")
    category: Optional[str] = Field(None, description="personal instances: the class word ('purse')")
    cc101_folder: Optional[str] = Field(None, description="the CustomConcept101 folder it plays")


class StartModel(_Strict):
    defense: Optional[str] = Field(None, description="defense applied before immunization (e.g. uce); none = base")
    erase: Literal["group", "all"] = Field("group", description="which concepts the start defense removes")
    preserve: Literal["others", "none"] = Field(
        "none", description="prompts the start defense preserves: others = the group's others (ConceptGroup.others). "
        "The start model is the card's setup, the same for every defense, so it may use them; a defense may not")


class DataSpec(_Strict):
    source: Literal["generated", "references"] = Field(
        description="generated: images drawn by the start model's base from the prompts (re-learning); "
        "references: the concept's own reference views (personalization)"
    )
    defense_images: int = Field(20, ge=1)
    attack_images: int = Field(20, ge=1)
    eval_images: int = Field(8, ge=1, description="generations per concept and checkpoint")


class Regularization(_Strict):
    prompt: str = Field(description="prompt of the regularization set; {category} = each target's category")
    images: int = Field(200, ge=1)


class Identifiers(_Strict):
    defense: list[str] = Field(min_length=1)
    attack: list[str] = Field(min_length=1)


class Metadata(_Strict):
    version: int = Field(ge=1)
    source: Optional[str] = None


class WorstCase(_Strict):
    epsilon: float = Field(0.10, ge=0, le=1, description=(
        "--attack-sweep: a sweep point counts as the worst case only while its damage to the others' classifier "
        "accuracy (before the attack minus after) exceeds by at most epsilon (absolute) its damage to the "
        "undefended model, with the same config and with the default one"))


class TaskCard(_Strict):
    task: str
    description: str
    kind: Literal["relearn", "personalization"]
    concept_type: Literal["style", "object", "instance"]
    prompt: str = Field(description="template: {name} or {a_name} (with its article), "
                        "or {identifier} and {category} for instances")
    identifiers: Optional[Identifiers] = None
    concepts: dict[str, Concept]
    groups: dict[str, list[str]]
    others: Optional[list[str]] = Field(None, description="'other' concepts for MRSGR; default: not in the group")
    start_model: StartModel
    attacks: list[str] = Field(min_length=1)
    report_step: int = Field(ge=0)
    checkpoints: list[NonNegativeInt] = Field(min_length=1)
    data: DataSpec
    regularization: Regularization
    metadata: Metadata
    worst_case: WorstCase = Field(default_factory=WorstCase)
    path: Optional[str] = Field(None, exclude=True)

    @model_validator(mode="after")
    def _consistent(self) -> "TaskCard":
        fields = {f for _, f, _, _ in string.Formatter().parse(self.prompt) if f}
        allowed = {"identifier", "category"} if self.concept_type == "instance" else {"name", "a_name"}
        if not fields or not fields <= allowed:
            raise ValueError(f"prompt: {self.prompt!r} must use only {sorted(allowed)} placeholders")
        if self.concept_type == "instance":
            if self.identifiers is None:
                raise ValueError("identifiers: instance cards need defense and attack identifier tokens")
            missing = [c for c, v in self.concepts.items() if not v.category]
            if missing:
                raise ValueError(f"concepts.{missing[0]}.category: required for instance concepts")
        for group, members in self.groups.items():
            for i, c in enumerate(members):
                if c not in self.concepts:
                    raise ValueError(f"groups.{group}[{i}]: unknown concept {c!r}; known: {', '.join(self.concepts)}")
            if len(set(members)) != len(members):
                raise ValueError(f"groups.{group}: a concept is listed twice")
            if self.identifiers and len(members) > min(len(self.identifiers.defense), len(self.identifiers.attack)):
                raise ValueError(f"groups.{group}: more concepts than identifier tokens")
        for i, c in enumerate(self.others or []):
            if c not in self.concepts:
                raise ValueError(f"others[{i}]: unknown concept {c!r}")
        if self.checkpoints != sorted(set(self.checkpoints)):
            raise ValueError("checkpoints: must be strictly increasing")
        if self.report_step not in self.checkpoints:
            raise ValueError(f"report_step: {self.report_step} is not one of the checkpoints {self.checkpoints}")
        return self

    def group(self, name: str) -> "ConceptGroup":
        if name not in self.groups:
            raise UnknownNameError(f"task {self.task}: unknown group {name!r}; groups: {', '.join(self.groups)}")
        return ConceptGroup.of(self, name)

    def prompt_for(self, concept: str, identifier: str | None = None) -> str:
        c = self.concepts[concept]
        if self.concept_type == "instance":
            return self.prompt.format(identifier=identifier, category=c.category)
        return self.prompt.format(name=c.name, a_name=with_article(c.name))


def category_key(noun: str) -> str:
    """How results and judges name an instance's category: ``"wooden pot"`` → ``"category-wooden-pot"``
    (the world's id of that concept; the real classifier maps it to its class name)."""
    return "category-" + noun.replace(" ", "-")


@dataclass(frozen=True)
class ConceptGroup:
    """One row of Table 6: the targets of a cell and the other concepts it is scored on.

    The one place the scored concepts are decided: ``others`` is the card's ``others`` list (all its
    concepts when absent) minus the targets, in that list's order. The runner generates and scores exactly
    ``scored`` (references, evaluations, accuracy, MRSGR), the manifest records ``others`` and the
    leaderboard reads them back; nothing else recomputes them.
    """

    task: str
    name: str
    targets: tuple[str, ...]
    others: tuple[str, ...]
    card: TaskCard = field(compare=False, repr=False)

    @classmethod
    def of(cls, card: TaskCard, name: str) -> "ConceptGroup":
        """Group ``name`` of ``card`` (checked by ``TaskCard.group``)."""
        targets = tuple(card.groups[name])
        others = tuple(c for c in (card.others or card.concepts) if c not in targets)
        return cls(card.task, name, targets, others, card)

    @property
    def scored(self) -> tuple[str, ...]:
        """Targets and others, in card order: every concept a cell of this group generates and scores."""
        return tuple(c for c in self.card.concepts if c in self.targets or c in self.others)

    def start_erased(self) -> "ConceptGroup":
        """What the card's start model erases for this group (``start_model.erase``): the group itself,
        or every concept of the card (then nothing is left to preserve)."""
        if self.card.start_model.erase == "group":
            return self
        return ConceptGroup(self.task, "all", tuple(self.card.concepts), (), self.card)

    def prompt(self, concept: str, phase: str = "attack") -> str:
        """The card's prompt for a target; instances get the defense's or the attacker's token of the
        target's position (MIMA §5.2: one token per concept, the attacker's differ from the defense's).
        An instance that is not a target has no token here: it is adapted alone (``alone``)."""
        identifier = None
        if self.card.identifiers is not None:
            if concept not in self.targets:
                raise ValueError(f"{concept!r} is not a target of group {self.name}; an instance gets its "
                                 "identifier as a target: use ConceptGroup.alone({concept!r})")
            identifier = getattr(self.card.identifiers, phase)[self.targets.index(concept)]
        return self.card.prompt_for(concept, identifier)

    def alone(self, concept: str) -> "ConceptGroup":
        """``concept`` as the one target of its own adaptation (the personalization card's others: MRSGR
        adapts each of them by itself); named after the concept, not the group, so what it keys is
        shared by every group that scores it."""
        return ConceptGroup(self.task, concept, (concept,), (), self.card)

    def probe(self, concept: str) -> tuple[str, str]:
        """(what the judge classifies, prompt) of the images that tell whether an attack left a scored
        concept drawable — the others' accuracy of Tab. 5 and the worst case's ε guard. The concept
        itself on the re-learning cards; for a personal instance, which no classifier knows, its
        category ("a photo of a sofa", judged as ``category_key("sofa")``)."""
        c = self.card.concepts[concept]
        if self.card.concept_type != "instance":
            return concept, self.prompt(concept) if concept in self.targets else self.card.prompt_for(concept)
        article = with_article(c.category).split()[0]
        return category_key(c.category), self.card.prompt.format(identifier=article, category=c.category)

    def concept_name(self, concept: str) -> str:
        return self.card.concepts[concept].name

    def concept_text(self, concept: str, phase: str = "attack") -> str:
        """The words of ``prompt(concept, phase)`` that name the concept: "Claude Monet", "chain saw",
        "sks purse" (the template's words around them are not the concept's)."""
        if self.card.concept_type != "instance":
            return self.concept_name(concept)
        identifier = getattr(self.card.identifiers, phase)[self.targets.index(concept)]
        return f"{identifier} {self.card.concepts[concept].category}"

    def class_prompt(self, concept: str) -> str:
        """The card's regularization prompt for ``concept``, its ``{category}`` filled in: DreamBooth's
        class prompt and MIMA's C_reg prompt ("purse", "houseplant"; "artwork" and "object" on the
        re-learning cards, which have no placeholder). A group of N instances has N of them."""
        category = self.card.concepts[concept].category or ""
        return self.card.regularization.prompt.format(category=category)

    def start_preserve_prompts(self) -> list[str]:
        """The prompts the card's start model preserves for this group (``start_model.preserve``):
        with ``others``, those of the concepts it scores but does not erase."""
        if self.card.start_model.preserve == "none":
            return []
        erased = self.start_erased()
        return [self.prompt(c) for c in self.others if c not in erased.targets]


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise CardError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
    except OSError as exc:
        raise CardError(f"{path}: cannot read: {exc.strerror}") from exc
    if not isinstance(data, dict):
        raise CardError(f"{path}: a task card is a YAML mapping, got {type(data).__name__}")
    return data


def _resolve_includes(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise CardError(f"{path}: include cycle through {' -> '.join(p.name for p in seen)}")
    data = _read_yaml(path)
    parent = data.pop("include", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise CardError(f"{path}: include: expected a file name, got {parent!r}")
    base = _resolve_includes(path.parent / parent, (*seen, path))
    return {**base, **data}


def load_card(path: str | Path) -> TaskCard:
    path = Path(path)
    if not path.is_file():
        raise CardError(f"{path}: no such task card file")
    data = _resolve_includes(path)
    try:
        card = TaskCard(**data, path=str(path))
    except ValidationError as exc:
        # A typo'd key also makes its real name "missing": report the typo, which explains both.
        err = min(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        loc = ".".join(str(p) for p in err["loc"]) or "card"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (a typo?); remove it or fix its name"
        elif err["type"] == "missing":
            msg = "required field is missing"
        where = "" if msg.startswith(loc) else f"{loc}: "
        raise CardError(f"{path}: {where}{msg}") from exc
    except TypeError as exc:
        raise CardError(f"{path}: {exc}") from exc
    return card


def card_paths(include_paths: list[str | Path] = ()) -> dict[str, Path]:
    """Task name → card file: built-ins first, then each --include-path (later ones override)."""
    found: dict[str, Path] = {}
    for folder in (_builtin_dir(), *map(Path, include_paths)):
        if not folder.is_dir():
            raise CardError(f"--include-path {folder}: no such folder")
        for path in sorted(folder.glob("*.yaml")):
            if not path.name.startswith("_"):  # _base.yaml files are only included
                found[path.stem] = path
    return found


def get_card(name_or_path: str, include_paths: list[str | Path] = ()) -> TaskCard:
    """A card by task name (built-in or on an include path) or by file path."""
    if name_or_path.endswith((".yaml", ".yml")) or Path(name_or_path).is_file():
        return load_card(name_or_path)
    paths = card_paths(include_paths)
    if name_or_path not in paths:
        import difflib

        close = difflib.get_close_matches(name_or_path, list(paths), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownNameError(f"unknown task {name_or_path!r}.{hint} Known tasks: {', '.join(sorted(paths))}")
    card = load_card(paths[name_or_path])
    if card.task != name_or_path:
        raise CardError(f"{paths[name_or_path]}: task: is {card.task!r} but the file is named {name_or_path}.yaml")
    return card
