"""Store and bus URLs: shown without their passwords, and the bridge's own
query parameters taken out before a driver sees them."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode


def split_url(url: str) -> tuple[str, str, str, list[tuple[str, str]]]:
    """``scheme://userinfo@rest?query`` as (scheme, userinfo, rest, query
    pairs), by plain string cuts that cannot fail: the user info is all
    before the *last* ``@`` of the part before ``?``, so a password holding
    an unescaped ``/``, ``#`` or ``@`` is still taken whole."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    rest, _, query = rest.partition("?")
    userinfo, at, hosts = rest.rpartition("@")
    if not at:
        userinfo, hosts = "", rest
    pairs = parse_qsl(query.partition("#")[0], keep_blank_values=True)
    return scheme, userinfo, hosts, pairs


def redact_url(url: str) -> str:
    """``url`` without its password (in the user info, or any query
    parameter with "password" in its name: ``password``, ``sslpassword``)."""
    scheme, userinfo, hosts, pairs = split_url(url)
    user = userinfo.split(":", 1)[0]
    query = urlencode([(k, v) for k, v in pairs if "password" not in k.lower()])
    return f"{scheme}://" * bool(scheme) + f"{user}@" * bool(user) + hosts + f"?{query}" * bool(query)


def take_query_param(url: str, name: str) -> tuple[str, str | None]:
    """``url`` without the query parameter ``name`` (one the driver does not
    know), and its decoded value if it was there. The rest of the URL is
    left exactly as written."""
    base, question, rest = url.partition("?")
    if not question:
        return url, None
    query, hash_, fragment = rest.partition("#")
    value, kept = None, []
    for item in query.split("&"):
        pairs = parse_qsl(item, keep_blank_values=True)
        if pairs and pairs[0][0] == name:
            value = pairs[0][1]
        elif item:
            kept.append(item)
    return base + ("?" + "&".join(kept) if kept else "") + hash_ + fragment, value
