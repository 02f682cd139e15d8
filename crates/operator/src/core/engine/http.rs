//! `listPhoneNumbers`: `GET {coreUrl}/v1/phone-numbers` with the session
//! token, one retry with a fresh token on a 401.

use super::{CachedToken, Operator, TokenPurpose};
use crate::core::json::{cat, u64_string};
use crate::core::time::REFRESH_BEFORE_EXPIRY_MS;
use crate::core::types::*;
use crate::core::wire::{decode_phone_numbers, http_error};
use audin_protocol::ErrorCode;

#[derive(Debug)]
pub(super) struct HttpFetch {
    op: OpId,
    /// Already retried once after a 401.
    retried: bool,
    pub(super) deadline: Millis,
}

impl Operator {
    pub(super) fn http_list_phone_numbers(&mut self, now: Millis, op: OpId) {
        match self.fresh_token(now) {
            Some(token) => self.send_http(now, op, false, token),
            None => {
                self.fetch_token(now, TokenPurpose::Http { op, retried: false });
            }
        }
    }

    /// The last token, if it is not about to expire.
    fn fresh_token(&self, now: Millis) -> Option<String> {
        let token = self.last_token.as_ref()?;
        let fresh = token
            .expires
            .is_none_or(|exp| exp > now.plus(REFRESH_BEFORE_EXPIRY_MS));
        fresh.then(|| token.token.clone())
    }

    fn send_http(&mut self, now: Millis, op: OpId, retried: bool, bearer_token: String) {
        let id = RequestId(self.new_id());
        let deadline = now.plus(self.config.request_timeout_ms);
        self.http.insert(
            id,
            HttpFetch {
                op,
                retried,
                deadline,
            },
        );
        self.push(Output::HttpRequest {
            id,
            method: "GET".to_string(),
            url: self.urls.phone_numbers.clone(),
            bearer_token,
        });
    }

    pub(super) fn http_token(
        &mut self,
        now: Millis,
        op: OpId,
        retried: bool,
        result: Result<CachedToken, String>,
    ) {
        match result {
            Ok(token) => self.send_http(now, op, retried, token.token),
            Err(cause) => self.fail_op(
                op,
                ErrorCode::RequestFailed,
                cat(&["getToken failed: ", &cause]),
            ),
        }
    }

    fn fail_op(&mut self, op: OpId, code: ErrorCode, message: String) {
        self.complete(op, Err(OperatorError::new(code, message)));
    }

    pub(super) fn http_response(&mut self, now: Millis, id: RequestId, status: u16, body: &str) {
        let Some(fetch) = self.http.remove(&id) else {
            return;
        };
        match status {
            200..=299 => match decode_phone_numbers(body) {
                Ok(phone_numbers) => {
                    self.complete(fetch.op, Ok(OpValue::PhoneNumbers { phone_numbers }))
                }
                Err(e) => self.fail_op(
                    fetch.op,
                    ErrorCode::RequestFailed,
                    cat(&["bad phone-number list: ", &e.describe()]),
                ),
            },
            401 if !fetch.retried => {
                // The token may have expired or been revoked: one retry with a fresh one.
                self.last_token = None;
                self.fetch_token(
                    now,
                    TokenPurpose::Http {
                        op: fetch.op,
                        retried: true,
                    },
                );
            }
            401 => {
                let message = cat(&[
                    "the session token was refused twice: ",
                    &server_message(body),
                ]);
                self.fail_op(fetch.op, ErrorCode::Unauthorized, message);
            }
            _ => {
                let message = cat(&[
                    "HTTP ",
                    &u64_string(status.into()),
                    ": ",
                    &server_message(body),
                ]);
                self.fail_op(fetch.op, ErrorCode::RequestFailed, message);
            }
        }
    }

    pub(super) fn http_failed(&mut self, _now: Millis, id: RequestId, message: &str) {
        if let Some(fetch) = self.http.remove(&id) {
            self.fail_op(fetch.op, ErrorCode::RequestFailed, message.to_string());
        }
    }

    pub(super) fn http_timeout(&mut self, now: Millis) {
        for id in self.http.keys_where(|f| f.deadline <= now) {
            self.http_failed(now, id, "the request timed out");
        }
    }
}

/// The `{code, message}` of an error body, or a note that there was none.
fn server_message(body: &str) -> String {
    match http_error(body) {
        Some((code, message)) => cat(&[&message, " (", code.as_str(), ")"]),
        None => "no error body".to_string(),
    }
}
