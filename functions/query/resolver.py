"""Powertools' HTTP API resolver, with path parameters decoded exactly once.

Powertools matches routes against the event's `rawPath`, which keeps the client's percent-encoding
(`/products/blue%20mug%20%C3%BC`), and passes the matched text on as the parameter's value. API
Gateway's `pathParameters` hold the decoded values (`blue mug ü`) whenever the route it matched
declares the parameter, as every route of the template does. A catch-all `$default` route carries
none; then the matched text is decoded here, once. (Powertools' own Bedrock resolver overrides the
same method to take its parameters from the event.)
"""

from re import Match
from typing import override
from urllib.parse import unquote

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver


class HttpApiResolver(APIGatewayHttpResolver):
    @override
    def _convert_matches_into_route_keys(self, match: Match[str]) -> dict[str, str]:
        decoded = self.current_event.path_parameters
        return {
            name: decoded[name] if name in decoded else unquote(raw)
            for name, raw in match.groupdict().items()
        }
