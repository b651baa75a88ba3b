"""Privacy of organic logs: ids hashed and fields dropped at ingest, and what reports may show.

Organic logs hold personal data: who said what. ``data.privacy`` in a recipe (or ``rlhf-organic ingest
--hash-ids ... --drop ...``) makes ingest

- **hash ids** (``hash_ids``): every value of the named id fields is replaced by the salted
  HMAC-SHA256 of it (32 hex characters). The salt comes from ``data.privacy.salt`` or the environment
  variable ``RLHF_ORGANIC_SALT``; a missing or short salt is refused, never replaced by an unsalted
  hash (an unsalted hash of a user id is a lookup away from the id). The same salt gives the same
  hash in every run and every file, so a user's feedback stays together and per-user trust works
  unchanged; another salt gives unrelated hashes.
- **drop fields** (``drop``): the named fields are blanked (null) as the records are read, so every
  table behaves as if the logs never had them (fields derived from them are blank too).

Both are applied to the canonical records each reader produces, before any table is derived, so
every output table (and the users table, and the example ids built from conversation ids) agrees.
The salt itself is never written: the resolved recipe shows ``salt: null`` and the stage fingerprint
holds only a one-way id of it. Only the standard library and pydantic are imported at module level
(the recipe imports this module); pyarrow is imported where tables are rewritten.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from typing import Literal

from pydantic import Field, SecretStr, field_serializer, field_validator

from ..errors import UserError
from ..section import Section

SALT_ENV = "RLHF_ORGANIC_SALT"
MIN_SALT_CHARS = 16
HASH_CHARS = 32  # 128 bits of the HMAC-SHA256: no collisions among any realistic number of ids

# id field -> where it lives (the canonical records; every table inherits the hashed value)
HASHABLE_IDS: dict[str, str] = {
    "user_id": "the user of each conversation and A/B choice (every table's user_id; users.parquet)",
    "conversation_id": "each conversation's id, and so every example_id (conversation_id:turn)",
    "message_id": "each message's id (messages, examples)",
    "preference_id": "each A/B choice's id (preferences, feedback)",
}

# field -> what blanking it removes
DROPPABLE: dict[str, str] = {
    "source_file": "the input file name of each conversation and A/B choice (conversations, preferences)",
    "source_line": "the input line number of each conversation and A/B choice",
    "message_id": "each message's id (messages, examples)",
    "dislike_reason": "the reason given with a thumbs down, free text in some logs (messages, examples, "
                      "the label of thumbs-down feedback events)",
    "dislike_feedback_text": "the text of user messages that explain a thumbs down (BB3x isDislikeFeedback): "
                             "blanked to an empty string in messages and in later examples' contexts",
    "safety_failure": "BB3x previous_interaction_failure (messages)",
    "reward": "the raw reward-classifier output and reward_class / reward_prob parsed from it",
    "gold": "crowdworker annotations (messages, examples, gold feedback events)",
    "rejects_excerpt": "the first 200 characters of each rejected line in rejects.jsonl (file, line and reason stay)",
}

HIDDEN_TEXT = "(user text hidden: output.show_user_text)"


class PrivacySection(Section):
    """``data.privacy``: ids to hash and fields to drop at ingest."""

    hash_ids: list[Literal[tuple(HASHABLE_IDS)]] = Field(  # type: ignore[valid-type]
        default_factory=list, description="id fields replaced by a salted HMAC-SHA256: " + ", ".join(HASHABLE_IDS)
    )
    drop: list[Literal[tuple(DROPPABLE)]] = Field(  # type: ignore[valid-type]
        default_factory=list, description="fields blanked at ingest: " + ", ".join(DROPPABLE)
    )
    salt: SecretStr | None = Field(
        None, description=f"salt of the id hashes (default: the {SALT_ENV} environment variable); never written out"
    )

    @field_validator("hash_ids", "drop")
    @classmethod
    def _unique(cls, values: list[str]) -> list[str]:
        return list(dict.fromkeys(values))

    @field_serializer("salt")
    def _never_written(self, value) -> None:
        return None  # the resolved recipe, reports and fingerprints never hold the salt

    @property
    def active(self) -> bool:
        return bool(self.hash_ids or self.drop)

    def resolve_salt(self, environ: Mapping[str, str] | None = None) -> bytes | None:
        """The salt's bytes when ids are hashed (None otherwise); refuses a missing or short salt."""
        if not self.hash_ids:
            return None
        environ = os.environ if environ is None else environ
        salt = self.salt.get_secret_value() if self.salt is not None else environ.get(SALT_ENV, "")
        return check_salt(salt, f"the {SALT_ENV} environment variable (or data.privacy.salt in a recipe)"
                          if self.salt is None else "data.privacy.salt")

    def settings(self, environ: Mapping[str, str] | None = None) -> dict:
        """What the ingest stage's fingerprint needs: the lists, and a one-way id of the salt."""
        if not self.active:
            return {}
        salt = self.resolve_salt(environ)
        return {"hash_ids": list(self.hash_ids), "drop": list(self.drop),
                "salt_id": salt_id(salt) if salt is not None else None}

    def scrubber(self, environ: Mapping[str, str] | None = None) -> Scrubber | None:
        return Scrubber(self.hash_ids, self.drop, self.resolve_salt(environ)) if self.active else None


def check_salt(salt: str, where: str = SALT_ENV) -> bytes:
    if not salt:
        raise UserError(
            f"hashing ids needs a salt, and none is set: set {where} to a long random secret (e.g. the output of "
            "`python -c \"import secrets; print(secrets.token_hex(32))\"`) and keep it: the same salt gives the "
            "same hashes in every run. rlhf_organic never hashes without a salt (an unsalted hash of an id can be "
            "reversed by hashing candidate ids)"
        )
    if len(salt) < MIN_SALT_CHARS:
        raise UserError(f"the salt in {where} has {len(salt)} characters; use at least {MIN_SALT_CHARS} "
                        "(a short salt can be guessed, and with it every hashed id)")
    return salt.encode("utf-8")


def salt_id(salt: bytes) -> str:
    """A one-way id of the salt, so that changing the salt changes the ingest stage's fingerprint."""
    return hmac.new(salt, b"rlhf_organic salt id", hashlib.sha256).hexdigest()[:16]


def hash_id(value: str, salt: bytes) -> str:
    """The salted HMAC-SHA256 of one id (32 hex characters)."""
    return hmac.new(salt, str(value).encode("utf-8"), hashlib.sha256).hexdigest()[:HASH_CHARS]


def hash_array(values, salt: bytes):
    """A pyarrow string array (or chunked array) with every non-null value hashed; each distinct value
    is hashed once."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    values = values.cast(pa.string())
    distinct = pc.unique(values.drop_null())
    hashed = pa.array([hash_id(v, salt) for v in distinct.to_pylist()], pa.string())
    return hashed.take(pc.index_in(values, value_set=distinct))


def hash_column(table, column: str, salt: bytes):
    """``table`` with ``column`` hashed: for files keyed by id outside the dataset (a ground-truth
    ``user_id`` column, say) that must match a dataset ingested with ``hash_ids``."""
    index = table.schema.get_field_index(column)
    return table.set_column(index, table.schema.field(index), hash_array(table.column(column), salt))


class Scrubber:
    """Applies one privacy setting to a reader's parsed chunk and to reject records."""

    def __init__(self, hash_ids, drop, salt: bytes | None):
        self.hash_ids, self.drop, self.salt = set(hash_ids), set(drop), salt
        if self.hash_ids and not salt:
            raise UserError("hashing ids needs a salt")  # resolve_salt refuses first; a guard for direct use

    def _ids(self, table, names):
        for name in names:
            if name in self.hash_ids and name in table.column_names:
                i = table.schema.get_field_index(name)
                table = table.set_column(i, table.schema.field(i), hash_array(table.column(name), self.salt))
        return table

    def _blank(self, table, name):
        import pyarrow as pa

        if name in self.drop and name in table.column_names:
            i = table.schema.get_field_index(name)
            field = table.schema.field(i)
            table = table.set_column(i, field, pa.nulls(table.num_rows, field.type))
        return table

    def conversations(self, table):
        """A canonical conversation table (``schema.CONVERSATION``) with the setting applied."""
        table = self._ids(table, ("user_id", "conversation_id"))
        table = self._blank(self._blank(table, "source_file"), "source_line")
        message_fields = {"message_id", "dislike_reason", "safety_failure", "reward", "gold",
                          "dislike_feedback_text"} & self.drop
        if "message_id" in self.hash_ids or message_fields:
            table = self._messages(table, message_fields)
        return table

    def _messages(self, table, dropped: set[str]):
        import pyarrow as pa
        import pyarrow.compute as pc

        i = table.schema.get_field_index("messages")
        history = table.column("messages").combine_chunks()
        offsets = history.offsets
        flat = history.flatten()  # respects the array's offset
        base = offsets[0].as_py()
        struct = flat.type
        columns = {struct.field(k).name: flat.field(k) for k in range(struct.num_fields)}
        n = len(flat)
        for name in dropped - {"dislike_feedback_text"}:
            if name in columns:
                columns[name] = pa.nulls(n, columns[name].type)
        if "message_id" in self.hash_ids and "message_id" not in dropped:
            columns["message_id"] = hash_array(columns["message_id"], self.salt)
        if "dislike_feedback_text" in dropped and "is_dislike_feedback" in columns:
            flagged = columns["is_dislike_feedback"].fill_null(False)
            columns["text"] = pc.if_else(flagged, pa.scalar("", pa.string()), columns["text"])
        messages = pa.StructArray.from_arrays([columns[f.name] for f in struct], fields=list(struct),
                                              mask=flat.is_null() if flat.null_count else None)
        shifted = pc.subtract(offsets, pa.scalar(base, offsets.type)) if base else offsets
        rebuilt = pa.ListArray.from_arrays(shifted, messages, type=history.type,
                                           mask=history.is_null() if history.null_count else None)
        return table.set_column(i, table.schema.field(i), rebuilt)

    def preferences(self, table):
        """A canonical preference table (``schema.PREFERENCE``) with the setting applied."""
        table = self._ids(table, ("user_id", "preference_id"))
        return self._blank(self._blank(table, "source_file"), "source_line")

    def parsed(self, parsed):
        """A reader's ``Parsed`` chunk with the setting applied (rejects are handled by ``reject``)."""
        parsed.conversations = [self.conversations(t) for t in parsed.conversations]
        parsed.preferences = [self.preferences(t) for t in parsed.preferences]
        return parsed

    def reject(self, record: dict) -> dict:
        """One ``rejects.jsonl`` record: the excerpt blanked when ``rejects_excerpt`` is dropped."""
        if "rejects_excerpt" in self.drop:
            return {**record, "excerpt": ""}
        return record


def show_user_text(recipe) -> bool:
    """Whether reports of ``recipe``'s run may print user message text: ``output.show_user_text`` when
    set, else only for simulated data (no real person wrote it)."""
    chosen = getattr(recipe.output, "show_user_text", None)
    return recipe.data.source == "simulate" if chosen is None else bool(chosen)


__all__ = ["DROPPABLE", "HASHABLE_IDS", "HIDDEN_TEXT", "PrivacySection", "SALT_ENV", "Scrubber", "check_salt",
           "hash_array", "hash_column", "hash_id", "salt_id", "show_user_text"]
