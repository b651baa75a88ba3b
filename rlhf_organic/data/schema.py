"""Arrow schemas of the ingested dataset: the one place that says what each table holds.

Every reader turns its input into *canonical conversations* (``CONVERSATION``: one row per
conversation with its messages as a list of ``MESSAGE`` structs) or *canonical preferences*
(``PREFERENCE``). ``tables.py`` derives the output tables (messages, examples, feedback, users)
from those with Arrow compute, so every format shares one code path after parsing.

Roles follow the chat-template convention: ``user`` (BB3x ``human``), ``assistant`` (BB3x ``bot``),
``system``.
"""

import pyarrow as pa

ROLE_USER, ROLE_ASSISTANT = "user", "assistant"

# One message as readers hand it over. Feedback fields are only meaningful on assistant messages,
# safety fields on user messages (the BB3x release annotates human turns only).
MESSAGE = pa.struct(
    [
        ("role", pa.string()),
        ("text", pa.string()),
        ("message_id", pa.string()),
        ("is_liked", pa.bool_()),
        ("is_disliked", pa.bool_()),
        ("dislike_reason", pa.string()),
        ("is_safety_controlled", pa.bool_()),  # a canned reply from the safety layer
        ("safety_failure", pa.string()),  # BB3x previous_interaction_failure
        ("from_model_crash", pa.bool_()),
        ("is_dislike_feedback", pa.bool_()),  # human free text explaining a thumbs-down
        ("safety_duo", pa.string()),
        ("safety_string_matcher", pa.string()),
        ("reward", pa.string()),  # raw offline reward-classifier output
        ("gold", pa.map_(pa.string(), pa.float64())),  # crowdworker annotations
    ]
)

CONVERSATION = pa.schema(
    [
        ("conversation_id", pa.string()),
        ("user_id", pa.string()),
        ("messages", pa.list_(MESSAGE)),
        ("source_file", pa.string()),
        ("source_line", pa.int64()),
    ]
)

# Crowdworker annotations in the output tables: key/value pairs as a list, which pandas, pyarrow and
# datasets all read (datasets cannot read Arrow map columns).
GOLD = pa.list_(pa.struct([("key", pa.string()), ("value", pa.float64())]))

CONTEXT = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))

PREFERENCE = pa.schema(
    [
        ("preference_id", pa.string()),
        ("user_id", pa.string()),
        ("context", CONTEXT),
        ("chosen", pa.string()),
        ("rejected", pa.string()),
        ("source_file", pa.string()),
        ("source_line", pa.int64()),
    ]
)

# ---- output tables -------------------------------------------------------------------------

CONVERSATIONS = pa.schema(
    [
        ("conversation_id", pa.string()),
        ("user_id", pa.string()),
        ("n_messages", pa.int32()),
        ("n_unsafe_user_messages", pa.int32()),
        ("is_adversarial", pa.bool_()),  # any user message flagged unsafe (the BB3x loader's rule)
        ("source_format", pa.string()),
        ("source_file", pa.string()),
        ("source_line", pa.int64()),
    ]
)

MESSAGES = pa.schema(
    [
        ("conversation_id", pa.string()),
        ("user_id", pa.string()),
        ("turn", pa.int32()),
        *[(f.name, f.type) for f in MESSAGE if f.name != "gold"],
        ("is_unsafe", pa.bool_()),  # user messages: a detector said other than __ok__; null if unchecked
        ("reward_class", pa.string()),
        ("reward_prob", pa.float64()),
        ("gold", GOLD),
    ]
)

EXAMPLES = pa.schema(
    [
        ("example_id", pa.string()),  # "<conversation_id>:<turn>"
        ("conversation_id", pa.string()),
        ("user_id", pa.string()),
        ("turn", pa.int32()),
        ("context", CONTEXT),  # every earlier message of the conversation, oldest first
        ("response", pa.string()),
        ("message_id", pa.string()),
        ("thumbs", pa.int8()),  # +1 liked, -1 disliked, null neither (or both)
        ("dislike_reason", pa.string()),
        ("is_safety_controlled", pa.bool_()),
        ("conversation_is_adversarial", pa.bool_()),
        ("reward_class", pa.string()),
        ("reward_prob", pa.float64()),
        ("gold", GOLD),
    ]
)

FEEDBACK = pa.schema(
    [
        ("kind", pa.string()),  # thumbs | preference | gold
        ("user_id", pa.string()),
        ("conversation_id", pa.string()),
        ("example_id", pa.string()),
        ("preference_id", pa.string()),
        ("value", pa.float64()),  # thumbs +1/-1; preference 1; gold: the annotation's number
        ("label", pa.string()),  # thumbs: dislike reason; gold: annotation type
    ]
)

PREFERENCES = pa.schema([f for f in PREFERENCE])

# Per-user counters; ingest sums per-chunk partial counts of these.
USER_COUNTS = [
    "n_conversations",
    "n_adversarial_conversations",
    "n_user_messages",
    "n_unsafe_user_messages",
    "n_examples",
    "n_thumbs_up",
    "n_thumbs_down",
    "n_preferences",
]
USERS = pa.schema(
    [("user_id", pa.string())] + [(c, pa.int64()) for c in USER_COUNTS] + [("n_feedback", pa.int64())]
)

OUTPUT_TABLES = {
    "conversations": CONVERSATIONS,
    "messages": MESSAGES,
    "examples": EXAMPLES,
    "feedback": FEEDBACK,
    "preferences": PREFERENCES,
    "users": USERS,
}
