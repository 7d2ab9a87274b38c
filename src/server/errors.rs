//! Which problem each refusal of the application becomes: status, problem type, title, and
//! what of the cause the client may see (the rest goes to the log). One place, so a refusal
//! reads the same on every route.

use axum::http::StatusCode;

use super::Problem;
use crate::app::dossier::ReadError;
use crate::app::registrations::RegistrationError;
use crate::gateway::{AccessError, DossierError};

/// 422: the request matches the API document but breaks a rule the document cannot state.
pub(super) fn unprocessable(detail: impl Into<String>) -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "unprocessable",
        "The request cannot be processed",
    )
    .detail(detail)
}

/// A view or section the configuration does not have is a 422 (the request matches the API
/// document, which cannot list them); every other refusal is a 403.
fn access_problem(e: AccessError) -> Problem {
    let field = match e {
        AccessError::UnknownView(_) => "view",
        AccessError::UnknownSection(_) => "sections",
        _ => return Problem::forbidden(e.to_string()),
    };
    unprocessable(e.to_string()).param(field, "unknown", e.to_string())
}

/// The problem for a dossier that is not given.
pub(super) fn read_problem(e: ReadError) -> Problem {
    match e {
        ReadError::NoCitizenView => Problem::not_found(e.to_string()),
        ReadError::NotACitizen | ReadError::NotAnEmployee => Problem::forbidden(e.to_string()),
        ReadError::Access(a) => access_problem(a),
        ReadError::Dossier(d) => dossier_problem(d),
    }
}

/// A dossier the gateway could not give: no source answered (in time), or its read could not
/// be recorded (fail closed).
pub(super) fn dossier_problem(e: DossierError) -> Problem {
    match e {
        DossierError::NoSource(d) => Problem::new(
            StatusCode::BAD_GATEWAY,
            "no-source",
            "No source could answer",
        )
        .detail(d),
        DossierError::AllTimedOut => Problem::new(
            StatusCode::GATEWAY_TIMEOUT,
            "deadline",
            "No source answered in time",
        ),
        DossierError::Audit(err) => {
            static GATE: std::sync::LazyLock<crate::lograte::LogGate> =
                std::sync::LazyLock::new(crate::lograte::LogGate::default);
            if let Some(suppressed) = GATE.admit() {
                tracing::error!(error = %err, suppressed, "Audit record not written; dossier withheld (`suppressed` more since the last line).");
            }
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "audit-unavailable",
                "The access could not be recorded, so the dossier is not shown",
            )
        }
    }
}

/// 503 for what needs the durable store, on a gateway that runs without one.
pub(super) fn no_store() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "no-store",
        "This gateway runs without a store",
    )
}

/// 503 for a store that cannot be read or written now (the access log, an application, the
/// registrations); the cause goes to the log.
pub(super) fn store_problem(e: crate::store::StoreError) -> Problem {
    tracing::error!(error = %e, "Store unavailable.");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store",
        "The store cannot be reached now; try again shortly",
    )
}

/// A partner credential or admin token refused: 401, or 403 when the operator pages are closed.
pub(super) fn credential_problem(e: crate::credentials::CredentialError) -> Problem {
    use crate::credentials::CredentialError;
    match e {
        CredentialError::AdminClosed => Problem::forbidden(e.to_string()),
        _ => Problem::unauthorized(e.to_string()),
    }
}

/// The problem for a registration change that is refused.
pub(super) fn registration_problem(e: RegistrationError) -> Problem {
    let text = e.to_string();
    match e {
        RegistrationError::NotYours(_) => Problem::forbidden(text),
        RegistrationError::NotFound(_) => Problem::not_found(text),
        RegistrationError::FileAdapter(_) => Problem::new(
            StatusCode::CONFLICT,
            "file-adapter",
            "This adapter is defined in the operator's files",
        )
        .detail(text),
        RegistrationError::Quota { .. } => Problem::new(
            StatusCode::CONFLICT,
            "registration-quota",
            "Your organisation has registered as many adapters as it may",
        )
        .detail(text),
        RegistrationError::IdMismatch { .. } => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-descriptor",
            "The adapter descriptor is not valid",
        )
        .detail(text)
        .param(
            "id",
            "mismatch",
            "the id in the body must equal the id in the path",
        ),
        RegistrationError::Invalid { title, errors } => config_problem(title, &errors),
        RegistrationError::Store(e) => store_problem(e),
        RegistrationError::Audit(e) => dossier_problem(DossierError::Audit(e)),
        RegistrationError::NoStore => no_store(),
        RegistrationError::NoReload => no_reload(),
        RegistrationError::NotATestPerson => Problem::forbidden(text),
        RegistrationError::Busy(_) => Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "busy",
            "Too many adapter tests at once",
        )
        .detail(text),
    }
}

/// 422 with every configuration problem, in the same words as `ketenportaal check`.
pub(super) fn config_problem(title: &str, e: &crate::config::ConfigErrors) -> Problem {
    let mut p = Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-descriptor",
        title,
    )
    .detail(e.to_string());
    for c in &e.0 {
        p = p.param(
            &format!("{}:{}:{}", c.file.display(), c.line, c.column),
            "config",
            match &c.hint {
                Some(h) => format!("{} (hint: {h})", c.message),
                None => c.message.clone(),
            },
        );
    }
    p
}

/// 503 for a change of the configuration on a gateway that cannot reload.
pub(super) fn no_reload() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "no-reload",
        "This gateway cannot change its configuration at run time",
    )
}
