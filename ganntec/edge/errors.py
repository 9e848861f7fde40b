"""Binance error responses: `{"code": -NNNN, "msg": "..."}` with the HTTP status Binance uses
(400 for request errors; rest-api.md "Error Codes", "HTTP Return Codes"; texts from errors.md).
Unknown paths are left to aiohttp's plain 404: Binance documents no JSON body for them."""

from __future__ import annotations

import orjson
from aiohttp import web

JSON_CONTENT_TYPE = "application/json;charset=UTF-8"  # what Binance sends


class BinanceError(Exception):
    """A request refused the way Binance refuses it."""

    def __init__(self, http_status: int, code: int, msg: str, data: dict | None = None):
        super().__init__(f"{code} {msg}")
        self.http_status = http_status
        self.code = code
        self.msg = msg
        self.data = data  # cancelReplace's per-part results
        self.headers: dict[str, str] | None = None  # sent with it (a 429's Retry-After)

    def body(self) -> dict:
        body = {"code": self.code, "msg": self.msg}
        if self.data is not None:
            body["data"] = self.data
        return body


# errors.md, 11xx "Request issues": the parameterised message of each code.
def illegal_chars(param: str, legal_range: str) -> BinanceError:
    return BinanceError(400, -1100, f"Illegal characters found in parameter '{param}'; legal range is '{legal_range}'.")


def duplicate_param() -> BinanceError:
    return BinanceError(400, -1101, "Duplicate values for a parameter detected.")


def mandatory_param(param: str) -> BinanceError:
    return BinanceError(400, -1102, f"Mandatory parameter '{param}' was not sent, was empty/null, or malformed.")


def unread_params(read: int, sent: int) -> BinanceError:
    return BinanceError(400, -1104, f"Not all sent parameters were read; read '{read}' parameter(s) but was sent '{sent}'.")


def bad_symbol() -> BinanceError:
    return BinanceError(400, -1121, "Invalid symbol.")


def bad_symbol_status() -> BinanceError:
    return BinanceError(400, -1122, "Invalid symbolStatus.")


def unknown_listen_key() -> BinanceError:
    return BinanceError(400, -1125, "This listenKey does not exist.")


def bad_combo() -> BinanceError:
    return BinanceError(400, -1128, "Combination of optional parameters invalid.")


def invalid_param(param: str) -> BinanceError:
    return BinanceError(400, -1130, f"Data sent for parameter '{param}' is not valid.")


# errors.md 10xx "General Server or Network issues": request security (rest-api.md "Timing security").
def timestamp_outside_window() -> BinanceError:
    return BinanceError(400, -1021, "Timestamp for this request is outside of the recvWindow.")


def timestamp_ahead() -> BinanceError:
    return BinanceError(400, -1021, "Timestamp for this request was 1000ms ahead of the server's time.")


def bad_signature() -> BinanceError:
    return BinanceError(400, -1022, "Signature for this request is not valid.")


def too_much_precision(param: str) -> BinanceError:
    return BinanceError(400, -1111, f"Parameter '{param}' has too much precision.")


def param_above(param: str, maximum: str) -> BinanceError:
    # errors.md lists this text under -1102 (the old -1131 BAD_RECV_WINDOW is no longer documented)
    return BinanceError(400, -1102, f"'{param}' contains unexpected value. Cannot be greater than {maximum}.")


# errors.md 20xx "Processing Issues". 401: what Binance answers with -2015 (web-socket-api.md
# "Authenticate after connection" shows `"status": 401` with it; REST clients see the same).
def bad_api_key_format() -> BinanceError:
    return BinanceError(401, -2014, "API-key format invalid.")


def rejected_api_key() -> BinanceError:
    return BinanceError(401, -2015, "Invalid API-key, IP, or permissions for action.")


# Order parameters (errors.md 11xx) and the matching engine's refusals (-1013, -2010, -2011, -2013).
def param_not_required(param: str) -> BinanceError:
    return BinanceError(400, -1106, f"Parameter '{param}' sent when not required.")


def param_overflow(param: str) -> BinanceError:
    return BinanceError(400, -1108, f"Parameter '{param}' overflowed.")


def invalid_tif() -> BinanceError:
    return BinanceError(400, -1115, "Invalid timeInForce.")


def invalid_order_type() -> BinanceError:
    return BinanceError(400, -1116, "Invalid orderType.")


def invalid_side() -> BinanceError:
    return BinanceError(400, -1117, "Invalid side.")


def empty_new_client_id() -> BinanceError:
    return BinanceError(400, -1118, "New client order ID was empty.")


def empty_orig_client_id() -> BinanceError:
    return BinanceError(400, -1119, "Original client order ID was empty.")


def either_param(a: str, b: str) -> BinanceError:
    return BinanceError(400, -1102, f"Param '{a}' or '{b}' must be sent, but both were empty/null!")


def invalid_cancel_restrictions() -> BinanceError:
    return BinanceError(400, -1145, "Invalid cancelRestrictions")


def filter_failure(name: str) -> BinanceError:
    return BinanceError(400, -1013, f"Filter failure: {name}")


def engine_refusal(code: int, msg: str) -> BinanceError:
    """A refusal the engines made (records.REASON_ERRORS), as Binance reports it."""
    return BinanceError(400, code, msg)


def unknown_order_cancel() -> BinanceError:
    return BinanceError(400, -2011, "Unknown order sent.")


def no_such_order() -> BinanceError:
    return BinanceError(400, -2013, "Order does not exist.")


def backend_timeout() -> BinanceError:
    # 5XX: "the execution status is UNKNOWN and could have been a success" (rest-api.md)
    return BinanceError(503, -1007, "Timeout waiting for response from backend server. Send status unknown; "
                                    "execution status unknown.")


def json_response(data, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, headers={"Content-Type": JSON_CONTENT_TYPE})


@web.middleware
async def binance_errors(request: web.Request, handler):
    """Turn a BinanceError raised by any handler into Binance's error body; a body beyond the
    app's client_max_size into one too (aiohttp raises its own 413)."""
    try:
        return await handler(request)
    except BinanceError as exc:
        return error_response(exc)
    except web.HTTPRequestEntityTooLarge:
        from ganntec.edge.appkeys import CONFIG  # (appkeys imports what imports this module)
        return error_response(body_too_large(request.app[CONFIG].limits.max_body_bytes))
    except web.HTTPException:
        raise
    except Exception as exc:  # noqa: BLE001 - a bug: logged, and the client still gets Binance's shape
        from ganntec.edge.appkeys import ERROR_BURST
        log_unexpected(exc, f"{request.method} {request.path}", request.app.get(ERROR_BURST))
        return error_response(unknown_error())


def unknown_error() -> BinanceError:
    return BinanceError(500, -1000, "An unknown error occurred while processing the request.")


def log_unexpected(exc: BaseException, where: str, burst=None) -> None:
    """Log a bug's exception; with a logline.Burst, once per burst of the same one (a failing
    request repeated a thousand times is one line and a count, not a thousand tracebacks)."""
    import logging
    import time

    logger = logging.getLogger("ganntec.edge")
    if burst is None:
        logger.error("unhandled error in %s", where, exc_info=exc)
        return
    burst((type(exc).__name__, where), f"unhandled error in {where}: {type(exc).__name__}: {exc}",
          time.monotonic(), exc=exc)


def error_burst():
    """The edge's Burst for unexpected errors, writing through the `logging` module."""
    import logging

    from ganntec.logline import Burst

    logger = logging.getLogger("ganntec.edge")

    def log(msg: str, level: str, exc=None, repeats: int = 0) -> None:
        logger.error(msg, exc_info=exc if not repeats else None)
    return Burst(log)


def error_response(exc: BinanceError) -> web.Response:
    resp = json_response(exc.body(), exc.http_status)
    if exc.headers:
        resp.headers.update(exc.headers)
    return resp


def body_too_large(limit: int) -> BinanceError:
    # errors.md has no code for it; -1000 UNKNOWN with the limit named, and HTTP's own 413.
    return BinanceError(413, -1000, f"Request body too large; current limit is {limit} bytes.")
