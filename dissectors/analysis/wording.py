"""Words for a report's numbers that a reader should not have to decode: a migration's connection sets
("legs": leg 0 the initial connections, leg N the Nth postcopy recovery) and places in an accept order."""

from __future__ import annotations

ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")


def ordinal(n: int) -> str:
    """``n`` (1-based) as a place: "first" .. "tenth", then "11th", "22nd", ..."""
    if 1 <= n <= len(ORDINALS):
        return ORDINALS[n - 1]
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def leg_owner(leg: int) -> str:
    """Whose channels leg ``leg`` holds, as a possessive: "the initial connections'", "the first postcopy
    recovery's"."""
    return "the initial connections'" if leg == 0 else f"the {ordinal(leg)} postcopy recovery's"


def leg_connections(leg: int) -> str:
    """Leg ``leg``'s connections: "the initial connections", "the first postcopy recovery's connections"."""
    return "the initial connections" if leg == 0 else f"{leg_owner(leg)} connections"


def place_in_leg(accept_index: int, leg: int) -> str:
    """A channel's place (0-based ``accept_index``) in leg ``leg``: "the third of the initial connections",
    "the second connection of the first postcopy recovery"."""
    place = ordinal(accept_index + 1)
    return f"the {place} of the initial connections" if leg == 0 else \
        f"the {place} connection of the {ordinal(leg)} postcopy recovery"


def place_in_leg_short(accept_index: int, leg: int, legs: int) -> str:
    """A channel's place for a narrow label (the timeline's lane names, about 40 characters with the address):
    "accepted third" in a migration of one set of connections, else with the set: "initial, accepted third",
    "first recovery, accepted second". ``legs``: how many sets the migration has."""
    place = f"accepted {ordinal(accept_index + 1)}"
    if legs <= 1:
        return place
    return f"initial, {place}" if leg == 0 else f"{ordinal(leg)} recovery, {place}"
