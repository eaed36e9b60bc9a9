"""Shared helpers for reading Pacemaker XML safely and by Pacemaker's own rules."""

from __future__ import annotations

from lxml import etree

from controller.model.errors import ParseError

# No entity expansion, no network: the XML comes from tools, but files can come from anywhere.
_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, huge_tree=True, remove_blank_text=True
)
# The same, keeping the text exactly: for documents written back (a CIB to patch or preview,
# whose diff against the original must hold only our edits).
_EXACT = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)


def parse_document(data: bytes, *, source: str, exact: bool = False) -> etree._Element:
    """Parse bytes into an element tree, turning every lxml failure into ParseError."""
    if not data.strip():
        raise ParseError("empty document", source=source)
    try:
        root = etree.fromstring(data, parser=_EXACT if exact else _PARSER)
    except etree.XMLSyntaxError as exc:
        raise ParseError(f"not well-formed XML: {exc}", source=source) from None
    except ValueError as exc:  # e.g. an encoding declaration lxml refuses
        raise ParseError(f"unreadable XML: {exc}", source=source) from None
    # Pacemaker's tools and libvirt never write a DTD; one with entities could rename a node
    # or a resource behind the text's back (an entity in an attribute value is expanded).
    if root.getroottree().docinfo.internalDTD is not None:
        raise ParseError("a document type declaration (DTD) is not accepted", source=source)
    return root


def to_int(value: str | None, *, element: str, attribute: str, source: str) -> int:
    if value is None:
        raise ParseError(f"missing attribute {attribute!r}", source=source, element=element)
    try:
        return int(value.removesuffix("ms"))
    except ValueError:
        raise ParseError(
            f"attribute {attribute!r} is not an integer: {value!r}", source=source, element=element
        ) from None


def required(el: etree._Element, attribute: str, *, source: str) -> str:
    value = el.get(attribute)
    if value is None:
        raise ParseError(f"missing attribute {attribute!r}", source=source, element=str(el.tag))
    return value
