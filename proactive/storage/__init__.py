"""Table and Queue Storage: every row and queue message the app keeps, and how
it reaches them. Nothing here imports the parts above it (delivering,
receiving, scheduling): they call storage.

Modules, from the clients to the tables:

    credentials.py   one place builds every Table/Queue client (key or identity)
    autocreate.py    tables and queues created when first found missing
    tables.py        helpers over a TableClient: safe keys, timestamps, attempts
    table_rest.py    a thin Table REST client for the per-message hot path
    queues.py        the outbox and its poison queue, in host.json's encoding
    seal.py          the app's seal on the fields only it may enqueue
    deliveries.py    delivery rows: one per (key, recipient), the send-once guard
    states.py        the states a delivery row records (`DeliveryState`, `EditState`)
    copies.py        the copies Teams accepted; attempts of unknown outcome
    progress.py      a many-user send's state, cancellation and end (`sends` table)
    shards.py        its counters: sharded, each recipient counted once
    counting.py      what one recipient's outcome adds to those counters
    send_index.py    the sends, newest first, for listing them
    references.py    conversation references, kept fresh by inbound activities
    reference_keys.py  the references table's partition keys
    user_index.py    a tenant's users in one partition (`allUsers` without a scan)
    preferences.py   users' opt-outs
    acks.py          who pressed a card's acknowledgement button
    reads.py         read receipts: how far a user has read their chat

The package imports none of them itself (import the module you need), so
loading one table's module does not load the rest.
"""

__all__ = ["acks", "autocreate", "copies", "counting", "credentials", "deliveries",
           "preferences", "progress", "queues", "reads", "reference_keys", "references",
           "seal", "send_index", "shards", "states", "table_rest", "tables", "user_index"]
