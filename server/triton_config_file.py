"""Triton's ModelConfig read from config.pbtxt (protobuf text format) or from the JSON that
Triton's load API may send instead, with the paths of the fields Switchyard does not honour.

Our `pb.ModelConfig` declares only the part of Triton's message that Switchyard uses; the rest
must be skipped and reported. Protobuf's text parser cannot do it alone: with
`allow_unknown_field` it skips an unknown field only if its value is a scalar, a scalar list
or one `{...}` message, and refuses the `name [ {...}, {...} ]` list of messages that Triton's
configs write everywhere (`model_warmup [...]`, `rate_limiter { resources [...] }`). So a
small scan over the text's tokens, against the message's descriptor, finds each unknown field
and its extent; those fields are blanked out of the text in place (line and column numbers
stay right) and the rest is parsed by protobuf strictly, so its error messages, with line and
column, describe the file as written. JSON is parsed by protobuf, unknown fields ignored, and
the decoded object is walked for them. Declared fields that Switchyard does not act on are
found from the parsed values (`unhonoured_fields`).

A path names fields from the top without list indices (`input.reshape`), each path once.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from google.protobuf import json_format, text_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from switchyard.protos import open_inference_pb2 as pb
from switchyard.runtimes.errors import ModelLoadError

# Protobuf text format's lexemes: strings (one line, backslash escapes), words (identifiers,
# numbers, enum values, `-inf`, dotted names) and single punctuation characters.
_TOKEN_PATTERN = re.compile(
    r"""(?P<skip>\s+|\#[^\n]*)
      | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
      | (?P<word>[A-Za-z0-9_.+-]+)
      | (?P<punctuation>[{}<>\[\]:,;/])""",
    re.VERBOSE,
)
_CLOSING = {"{": "}", "<": ">", "[": "]"}
# Through the file's descriptor: the stubs type a class's DESCRIPTOR as pure-Python or upb.
_MODEL_CONFIG = pb.DESCRIPTOR.message_types_by_name["ModelConfig"]


@dataclass(frozen=True, slots=True)
class _Token:
    text: str
    start: int  # offsets into the whole text
    end: int


class _TextSyntaxError(Exception):
    def __init__(self, text: str, offset: int, problem: str) -> None:
        line = text.count("\n", 0, offset) + 1
        column = offset - (text.rfind("\n", 0, offset) + 1) + 1
        super().__init__(f"{line}:{column} : {problem}")


def parse_config_text(text: str, source: str) -> tuple[pb.ModelConfig, list[str]]:
    """The config in `text` and the paths of the fields it sets that `pb.ModelConfig` does
    not declare; ModelLoadError naming `source` (the file) on a syntax or value error."""
    try:
        tokens = _tokenize(text)
        unknown_spans: list[tuple[str, int, int]] = []
        _FieldScan(text, tokens, unknown_spans).fields(_MODEL_CONFIG, "", None)
    except _TextSyntaxError as exc:
        raise ModelLoadError(f"{source}: invalid ModelConfig text: {exc}") from exc
    known_text = text
    for _, start, end in unknown_spans:
        blank = re.sub(r"[^\n]", " ", known_text[start:end])
        known_text = known_text[:start] + blank + known_text[end:]
    config = pb.ModelConfig()
    try:
        text_format.Parse(known_text, config)
    except text_format.ParseError as exc:
        # str(exc) starts with "line:column : ".
        raise ModelLoadError(f"{source}: invalid ModelConfig text: {exc}") from exc
    return config, _unique([path for path, _, _ in unknown_spans])


def parse_config_json(text: str, source: str) -> tuple[pb.ModelConfig, list[str]]:
    """The config in JSON `text` (protobuf's JSON mapping, field names as in the .proto or in
    lowerCamelCase) and the paths of the fields `pb.ModelConfig` does not declare."""
    try:
        decoded = json.loads(text)
    except ValueError as exc:
        raise ModelLoadError(f"{source}: invalid JSON: {exc}") from exc
    if not isinstance(decoded, dict):
        raise ModelLoadError(f"{source}: a ModelConfig must be a JSON object, got {text[:40]!r}")
    config = pb.ModelConfig()
    try:
        json_format.ParseDict(decoded, config, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise ModelLoadError(f"{source}: invalid ModelConfig JSON: {exc}") from exc
    unknown: list[str] = []
    _walk_json(decoded, _MODEL_CONFIG, "", unknown)
    return config, _unique(unknown)


def unhonoured_fields(config: pb.ModelConfig) -> list[str]:
    """Paths of the declared fields set to something Switchyard does not act on. (Instance
    group names are only labels and are not reported.)"""
    paths: list[str] = []
    if config.HasField("dynamic_batching"):
        if config.dynamic_batching.preserve_ordering:
            paths.append("dynamic_batching.preserve_ordering")
        if config.dynamic_batching.priority_levels:
            paths.append("dynamic_batching.priority_levels")
    if any(group.gpus for group in config.instance_group):
        paths.append("instance_group.gpus")
    if any(group.kind == pb.ModelInstanceGroup.KIND_MODEL for group in config.instance_group):
        paths.append("instance_group.kind KIND_MODEL")
    if any(tensor.optional for tensor in config.input):
        # An ONNX Runtime session needs every input it declares.
        paths.append("input.optional")
    return paths


def _unique(paths: list[str]) -> list[str]:
    return list(dict.fromkeys(paths))


def _tokenize(text: str) -> list[_Token]:
    tokens = []
    offset = 0
    while offset < len(text):
        match = _TOKEN_PATTERN.match(text, offset)
        if match is None:
            character = text[offset]
            problem = "unterminated string" if character in "\"'" else f"unexpected {character!r}"
            raise _TextSyntaxError(text, offset, problem)
        if match.lastgroup != "skip":
            tokens.append(_Token(match.group(), match.start(), match.end()))
        offset = match.end()
    return tokens


def _is_string(token: str | None) -> bool:
    return token is not None and token[0] in "\"'"


class _FieldScan:
    """Walks the fields of a well-bracketed text against a descriptor, recording the path and
    extent of each field the descriptor does not declare. Values are only stepped over:
    protobuf checks the declared ones afterwards."""

    def __init__(self, text: str, tokens: list[_Token], unknown: list[tuple[str, int, int]]):
        self._text = text
        self._tokens = tokens
        self._next = 0
        self._unknown = unknown

    def fields(self, descriptor: Descriptor, prefix: str, closing: str | None) -> None:
        """The fields of one message, up to `closing` (None: the end of the text)."""
        while self._peek() != closing:
            if self._peek() is None:
                raise self._error(f'expected "{closing}" before the end of the text')
            start = self._tokens[self._next].start
            name = self._field_name()
            field = descriptor.fields_by_name.get(name)
            if field is not None and field.type == FieldDescriptor.TYPE_MESSAGE:
                self._message_value(field.message_type, f"{prefix}{name}.")
            else:
                self._skip_value()
            if self._peek() in (",", ";"):  # optional separators
                self._next += 1
            if field is None:
                self._unknown.append((prefix + name, start, self._tokens[self._next - 1].end))

    def _field_name(self) -> str:
        token = self._take()
        if token == "[":  # an extension or an Any type URL: never declared by us
            parts = [token]
            while parts[-1] != "]":
                parts.append(self._take())
            return "".join(parts)
        if not re.fullmatch(r"[A-Za-z_]\w*", token):
            raise self._error(f"expected a field name, got {token!r}", back=1)
        return token

    def _message_value(self, descriptor: Descriptor, prefix: str) -> None:
        """`{...}`, `<...>` or a `[...]` list of them; anything else is left to protobuf."""
        if self._peek() == ":":
            self._next += 1
        if self._peek() != "[":
            self._message_or_scalar(descriptor, prefix)
            return
        self._next += 1
        while self._peek() != "]":
            self._message_or_scalar(descriptor, prefix)
            if self._peek() == ",":
                self._next += 1
        self._next += 1

    def _message_or_scalar(self, descriptor: Descriptor, prefix: str) -> None:
        opening = self._peek()
        if opening in ("{", "<"):
            self._next += 1
            self.fields(descriptor, prefix, _CLOSING[opening])
            self._next += 1
        else:
            self._skip_scalar()

    def _skip_value(self) -> None:
        if self._peek() == ":":
            self._next += 1
        opening = self._peek()
        if opening not in _CLOSING:
            self._skip_scalar()
            return
        open_brackets = []
        while True:
            token = self._take()
            if token in _CLOSING:
                open_brackets.append(_CLOSING[token])
            elif token in _CLOSING.values():
                if token != open_brackets.pop():
                    raise self._error(f"unbalanced {token!r}", back=1)
                if not open_brackets:
                    return

    def _skip_scalar(self) -> None:
        token = self._take()
        if token in _CLOSING or token in _CLOSING.values():
            raise self._error(f"expected a value, got {token!r}", back=1)
        while _is_string(token) and _is_string(self._peek()):
            token = self._take()  # adjacent string literals join

    def _peek(self) -> str | None:
        return self._tokens[self._next].text if self._next < len(self._tokens) else None

    def _take(self) -> str:
        token = self._peek()
        if token is None:
            raise self._error("unexpected end of the text")
        self._next += 1
        return token

    def _error(self, problem: str, back: int = 0) -> _TextSyntaxError:
        index = self._next - back
        offset = self._tokens[index].start if index < len(self._tokens) else len(self._text)
        return _TextSyntaxError(self._text, offset, problem)


def _walk_json(value: object, descriptor: Descriptor, prefix: str, unknown: list[str]) -> None:
    if not isinstance(value, dict):
        return  # json_format already refused a non-object where a message belongs
    by_json_name = {field.json_name: field for field in descriptor.fields}
    for key, item in value.items():
        field = descriptor.fields_by_name.get(key) or by_json_name.get(key)
        if field is None:
            unknown.append(prefix + key)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            items = item if isinstance(item, list) else [item]
            for element in items:
                _walk_json(element, field.message_type, f"{prefix}{field.name}.", unknown)
