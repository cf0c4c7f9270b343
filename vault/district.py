"""The whole district in one file: its places, organisations, own purposes and mandates,
declared in YAML and applied idempotently (`resident-vault district apply`), or written
from the database in the same form (`district export`). docs/district.yaml is an example.

Applying compares the file with the database and makes each difference with the same
functions the single commands use (`vault.places`, `vault.organisations`,
`vault.purposes`, `vault.mandates`), in the caller's one transaction: all of it or, at
the first refusal, none. A dry run is the same apply, rolled back by the caller, so the
diff it prints is exactly what applying would do. What the file leaves out is retired:
places, organisations and mandates in force that it does not name. Purposes it does not
name stay registered (the shipped national ones among them), and accounts are not part
of the file (people are added with `resident-vault accounts`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.errors import DistrictError
from vault.i18n import Message
from vault.mandates import grant_mandate, list_mandates, revoke_mandate
from vault.organisations import (
    add_organisation,
    change_organisation,
    list_organisations,
    retire_organisation,
)
from vault.places import KINDS, add_place, list_places, move_place, rename_place, retire_place
from vault.purposes import (
    PurposeRow,
    RegisteredPurpose,
    add_purpose,
    find_purpose,
    list_purposes,
    purpose_definition,
)

# A date without a time means "through that day" where the district is.
DISTRICT_ZONE: Final = ZoneInfo("Asia/Shanghai")
CHILDREN: Final = {"street": "communities", "community": "grids", "grid": "buildings"}


@dataclass(frozen=True)
class Change:
    """One difference between the file and the database: added, changed or retired."""

    action: str  # add | change | retire
    kind: str  # street, community, grid, building, organisation, purpose, mandate
    id: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        return {"action": self.action, "kind": self.kind, "id": self.id, **self.details}


def _refuse(where: str, problem: str, **values: object) -> DistrictError:
    return DistrictError(Message(f"district.{problem}", {"where": where, **values}))


def parse_until(value: object, where: str = "until") -> datetime | None:
    """`2027-12-31` (through that day, Asia/Shanghai) or an ISO 8601 time with a zone."""
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        return datetime.combine(value + timedelta(days=1), time(), DISTRICT_ZONE)
    else:
        text = str(value)
        try:
            if len(text) == 10:
                day = date.fromisoformat(text)
                return datetime.combine(day + timedelta(days=1), time(), DISTRICT_ZONE)
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise DistrictError(Message("mandates.bad-until", {"until": text})) from None
    if moment.tzinfo is None:
        raise DistrictError(Message("mandates.bad-until", {"until": str(value)}))
    return moment


# -- reading the file ------------------------------------------------------------------------


def load_district_file(text: str) -> dict[str, Any]:
    """The YAML document; DistrictError (one line) when it is not a mapping of lists."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        raise DistrictError(Message("district.not-yaml", {"line": line})) from None
    if document is None:
        document = {}
    return check_district(document)


def check_district(document: object) -> dict[str, Any]:
    """The document, if it is a mapping of the file's keys (DistrictError otherwise)."""
    if not isinstance(document, dict):
        raise _refuse("/", "not-a-mapping")
    for key in document:
        if key not in {"version", "streets", "organisations", "purposes", "mandates"}:
            raise _refuse("/", "unknown-key", key=key)
    return document


def _items(document: Mapping[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    value = document.get(key) or []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise _refuse(where, "not-a-list", key=key)
    return value


def _text(item: Mapping[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str | int) or not str(value).strip():
        raise _refuse(where, "missing", key=key)
    return str(value).strip()


def _names(item: Mapping[str, Any], key: str, where: str) -> list[str]:
    value = item.get(key) or []
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",")]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _refuse(where, "not-names", key=key)
    return [v for v in value if v]


@dataclass(frozen=True)
class _Place:
    kind: str
    id: str
    name: str
    parent: str | None


def _places(document: Mapping[str, Any]) -> list[_Place]:
    """Every place of the file, parents before their children."""
    found: list[_Place] = []

    def walk(items: list[dict[str, Any]], kind: str, parent: str | None, where: str) -> None:
        for index, item in enumerate(items):
            here = f"{where}[{index}]"
            place = _Place(kind, _text(item, "id", here), _text(item, "name", here), parent)
            found.append(place)
            child = CHILDREN.get(kind)
            if child is not None:
                next_kind = KINDS[KINDS.index(kind) + 1]
                walk(_items(item, child, here), next_kind, place.id, f"{here}.{child}")
            elif any(key in item for key in CHILDREN.values()):
                raise _refuse(here, "unknown-key", key="/".join(CHILDREN.values()))

    walk(_items(document, "streets", "streets"), "street", None, "streets")
    seen: set[str] = set()
    for place in found:
        if place.id in seen:
            raise _refuse(place.id, "twice", id=place.id)
        seen.add(place.id)
    return found


# -- applying it -----------------------------------------------------------------------------


def apply_district(
    session: Session,
    document: Mapping[str, Any],
    *,
    field_categories: Mapping[str, str | None],
    category_names: Sequence[str],
    actor: str | None,
) -> list[Change]:
    """Make the database what the file declares, in the caller's transaction; the changes
    made, in order. DistrictError/PlaceError at the first refusal (roll back then)."""
    changes: list[Change] = []
    changes += _apply_places(session, _places(document))
    changes += _apply_organisations(session, _items(document, "organisations", "organisations"))
    changes += _apply_purposes(
        session, _items(document, "purposes", "purposes"), field_categories, category_names, actor
    )
    changes += _apply_mandates(
        session, _items(document, "mandates", "mandates"), field_categories, actor
    )
    return changes


def _apply_places(session: Session, wanted: list[_Place]) -> Iterator[Change]:
    existing = {row.id: row for row in list_places(session, retired=True)}
    for place in wanted:
        row = existing.get(place.id)
        if row is None:
            add_place(session, place.kind, place.id, place.name, place.parent)
            yield Change("add", place.kind, place.id, {"name": place.name, "parent": place.parent})
            continue
        if row.kind != place.kind or row.retired:
            raise _refuse(place.id, "not-reusable", id=place.id, kind=row.kind)
        if row.parent != place.parent and place.parent is not None:
            move_place(session, place.kind, place.id, place.parent)
            yield Change("change", place.kind, place.id, {"parent": place.parent})
        if row.name != place.name:
            rename_place(session, place.kind, place.id, place.name)
            yield Change("change", place.kind, place.id, {"name": place.name})
    named = {place.id for place in wanted}
    # Children before parents, so a retired grid has no building still in use under it.
    for kind in reversed(KINDS):
        for row in existing.values():
            if row.kind == kind and not row.retired and row.id not in named:
                retire_place(session, kind, row.id)
                yield Change("retire", kind, row.id)


def _apply_organisations(session: Session, items: list[dict[str, Any]]) -> Iterator[Change]:
    existing = {row.id: row for row in list_organisations(session, retired=True)}
    named: set[str] = set()
    for index, item in enumerate(items):
        where = f"organisations[{index}]"
        org_id, kind, name = (_text(item, key, where) for key in ("id", "kind", "name"))
        name_en = str(item.get("name_en") or name)
        places, buildings = _names(item, "places", where), _names(item, "buildings", where)
        named.add(org_id)
        row = existing.get(org_id)
        if row is None:
            add_organisation(
                session,
                org_id,
                kind,
                name,
                name_en=name_en,
                communities=places,
                buildings=buildings,
            )
            yield Change("add", "organisation", org_id, {"type": kind, "name": name})
            continue
        if row.retired or row.kind != kind:
            raise _refuse(where, "not-reusable", id=org_id, kind=row.kind)
        differs = {
            "name": (row.name_zh, name),
            "name_en": (row.name_en, name_en),
            "places": (sorted(row.communities), sorted(set(places))),
            "buildings": (sorted(row.buildings), sorted(set(buildings))),
        }
        changed = {key: new for key, (old, new) in differs.items() if old != new}
        if changed:
            change_organisation(
                session,
                org_id,
                name=name,
                name_en=name_en,
                communities=places,
                buildings=buildings,
            )
            yield Change("change", "organisation", org_id, changed)
    for row in existing.values():
        if not row.retired and row.id not in named:
            retire_organisation(session, row.id)
            yield Change("retire", "organisation", row.id)


def _pairs(value: object, where: str, key: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _refuse(where, "not-pairs", key=key)
    return {str(k): v for k, v in value.items()}


def _apply_purposes(
    session: Session,
    items: list[dict[str, Any]],
    field_categories: Mapping[str, str | None],
    category_names: Sequence[str],
    actor: str | None,
) -> Iterator[Change]:
    for index, item in enumerate(items):
        where = f"purposes[{index}]"
        code = _text(item, "code", where)
        definition = purpose_definition(
            name_zh=_text(item, "name", where),
            name_en=_text(item, "name_en", where),
            legal_basis=_text(item, "basis", where),
            reference_zh=_text(item, "law", where),
            reference_en=_text(item, "law_en", where),
            recipients=_names(item, "recipients", where),
            actions=_names(item, "actions", where),
            fields=_pairs(item.get("fields"), where, "fields"),
            categories=_pairs(item.get("categories"), where, "categories"),
            retention_days=int(item.get("retention_days", 365)),
            field_names=list(field_categories),
            category_names=category_names,
        )
        registered = find_purpose(session, code)
        if registered is None:
            add_purpose(session, code, definition, actor=actor)
            yield Change("add", "purpose", code, {"name": definition["name"]["zh"]})
            continue
        same = {k: v for k, v in registered.definition.items() if k != "notice_version"}
        if same != {k: v for k, v in definition.items() if k != "notice_version"}:
            # A registered purpose is what residents consented to: never edited in place.
            raise _refuse(where, "purpose-differs", code=code)


def _apply_mandates(
    session: Session,
    items: list[dict[str, Any]],
    field_categories: Mapping[str, str | None],
    actor: str | None,
) -> Iterator[Change]:
    in_force = {(row.organisation, row.purpose): row for row in list_mandates(session)}
    named: set[tuple[str, str]] = set()
    for index, item in enumerate(items):
        where = f"mandates[{index}]"
        org, purpose = _text(item, "org", where), _text(item, "purpose", where)
        if (org, purpose) in named:
            raise _refuse(where, "twice", id=f"{org}:{purpose}")
        named.add((org, purpose))
        actions = _names(item, "actions", where)
        fields = _names(item, "fields", where) if item.get("fields") is not None else None
        basis = str(item.get("basis") or "law")
        until = parse_until(item.get("until"))
        row = in_force.get((org, purpose))
        wanted = {
            "actions": sorted(actions),
            "fields": None if fields is None else sorted(fields),
            "basis": basis,
            "until": until,
        }
        if row is not None:
            held = {
                "actions": sorted(row.actions),
                "fields": None if row.fields is None else sorted(row.fields),
                "basis": row.basis,
                "until": row.valid_until,
            }
            if held == wanted:
                continue
        grant_mandate(
            session,
            org,
            purpose,
            actions,
            fields=fields,
            basis=basis,
            valid_until=until,
            field_categories=field_categories,
            actor=actor,
        )
        shown = wanted | {"until": None if until is None else until.isoformat()}
        yield Change("add" if row is None else "change", "mandate", f"{org}:{purpose}", shown)
    for (org, purpose), row in in_force.items():
        if (org, purpose) not in named:
            revoke_mandate(session, org, purpose, actor=actor)
            yield Change("retire", "mandate", f"{org}:{purpose}", {"actions": list(row.actions)})


# -- writing it ------------------------------------------------------------------------------


def export_district(session: Session) -> dict[str, Any]:
    """Today's district in the file's form (places and organisations in service, the
    purposes the district added, the mandates in force)."""
    places = list_places(session)
    nodes: dict[str, dict[str, Any]] = {}
    streets: list[dict[str, Any]] = []
    for row in places:
        node: dict[str, Any] = {"id": row.id, "name": row.name}
        nodes[row.id] = node
        if row.kind == "street":
            streets.append(node)
        elif row.parent in nodes:
            parent_kind = KINDS[KINDS.index(row.kind) - 1]
            nodes[row.parent].setdefault(CHILDREN[parent_kind], []).append(node)
    organisations = [
        {
            "id": row.id,
            "kind": row.kind,
            "name": row.name_zh,
            "name_en": row.name_en,
            **({"places": list(row.communities)} if row.communities else {}),
            **({"buildings": list(row.buildings)} if row.buildings else {}),
        }
        for row in list_organisations(session)
    ]
    purposes = [_purpose_item(row.code, row.definition) for row in _own_purposes(session)]
    mandates = [
        {
            "org": row.organisation,
            "purpose": row.purpose,
            "actions": list(row.actions),
            **({"fields": list(row.fields)} if row.fields is not None else {}),
            **({"basis": row.basis} if row.basis != "law" else {}),
            **({"until": row.valid_until.isoformat()} if row.valid_until is not None else {}),
        }
        for row in list_mandates(session)
    ]
    document: dict[str, Any] = {"version": 1, "streets": streets, "organisations": organisations}
    if purposes:
        document["purposes"] = purposes
    document["mandates"] = mandates
    return document


def _own_purposes(session: Session) -> list[PurposeRow]:
    """The purposes the district registered (not those the policy shipped with)."""
    shipped = set(
        session.scalars(
            select(RegisteredPurpose.code).where(RegisteredPurpose.added_by == "shipped")
        )
    )
    return [row for row in list_purposes(session) if row.code not in shipped]


def _purpose_item(code: str, definition: Mapping[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = {
        "code": code,
        "name": definition["name"]["zh"],
        "name_en": definition["name"]["en"],
        "basis": definition["legal_basis"],
        "law": definition["legal_reference"]["zh"],
        "law_en": definition["legal_reference"]["en"],
        "recipients": list(definition.get("recipient_types", ())),
        "actions": list(definition.get("actions", ())),
        "retention_days": definition.get("retention_days", 365),
    }
    if definition.get("fields"):
        item["fields"] = dict(definition["fields"])
    if definition.get("categories"):
        item["categories"] = dict(definition["categories"])
    return item


def dump_district(document: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(document), allow_unicode=True, sort_keys=False, width=100)
