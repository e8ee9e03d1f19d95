//! `organization/*`: create, get, update, delete, list, members. Members may read their own
//! organization; the rest needs `identity:organization:*` permissions, globally or (for one
//! organization's own operations) within it.

use serde_json::{json, Value};

use super::caller::Caller;
use super::{Identity, Request};
use crate::codes::OpError;
use crate::permissions::{ORG_CREATE, ORG_DELETE, ORG_READ, ORG_UPDATE};
use crate::store::orgs::{self, OrgFields};
use crate::store::{notices, now_secs, roles, users};

/// Longest name.
const MAX_NAME: usize = 255;
/// Longest slug.
const MAX_SLUG: usize = 100;
/// Longest description.
const MAX_DESCRIPTION: usize = 1000;

pub(super) fn run(id: &Identity, operation: &str, req: &Request) -> Result<Value, OpError> {
    let caller = id.caller(req)?;
    match operation {
        "create" => create(id, req, &caller),
        "get" => get(id, req, &caller),
        "update" => update(id, req, &caller),
        "delete" => delete(id, req, &caller),
        "list" => list(id, req, &caller),
        _ => members(id, req, &caller),
    }
}

/// A valid slug: lowercase letters, digits and single inner dashes.
fn check_slug(slug: &str) -> Result<(), OpError> {
    if slug.is_empty() || orgs::slug_of(slug) != slug {
        return Err(OpError::invalid(
            "field `slug` must be lowercase letters, digits and single dashes inside",
        ));
    }
    Ok(())
}

fn create(id: &Identity, req: &Request, caller: &Caller) -> Result<Value, OpError> {
    id.require(req, caller, ORG_CREATE, None)?;
    let name = req.body.str("name", MAX_NAME)?;
    let slug = match req.body.opt_str("slug", MAX_SLUG)? {
        Some(slug) => slug,
        None => orgs::slug_of(&name),
    };
    check_slug(&slug).map_err(|e| {
        if req.body.has("slug") {
            e
        } else {
            OpError::invalid("field `name` gives no usable slug: give field `slug`")
        }
    })?;
    let fields = OrgFields {
        name: Some(name),
        slug: Some(slug),
        description: req.body.opt_str("description", MAX_DESCRIPTION)?,
        is_active: req.body.opt_bool("is_active")?,
    };
    let row = id.record(req, caller.actor(), "org.create", "", "ok");
    let org = id.write_audited(row, move |conn, row| {
        let org = orgs::insert(conn, &fields, now_secs())?;
        row.target = format!("org:{}", org.id);
        Ok(org)
    })?;
    Ok(json!({ "organization": org }))
}

/// The organization named by `org_id` or `slug`.
fn find(id: &Identity, req: &Request) -> Result<orgs::Organization, OpError> {
    if let Some(org_id) = req.body.opt_id("org_id")? {
        return Ok(id.store.read(|conn| orgs::get(conn, org_id))?);
    }
    if let Some(slug) = req.body.opt_str("slug", MAX_SLUG)? {
        return Ok(id.store.read(|conn| orgs::find_by_slug(conn, &slug))?);
    }
    Err(OpError::invalid("missing field `org_id` (or `slug`)"))
}

/// Members read their organization; others need `identity:organization:read` (there).
fn require_read(id: &Identity, req: &Request, caller: &Caller, org: i64) -> Result<(), OpError> {
    if caller.grants.organizations.contains(&org) {
        return Ok(());
    }
    id.require(req, caller, ORG_READ, Some(org))
}

fn get(id: &Identity, req: &Request, caller: &Caller) -> Result<Value, OpError> {
    let org = find(id, req);
    let org_id = match &org {
        Ok(org) => Some(org.id),
        Err(_) => req.body.opt_id("org_id").ok().flatten(),
    };
    match org_id {
        Some(org_id) => require_read(id, req, caller, org_id)?,
        None => id.require(req, caller, ORG_READ, None)?,
    }
    Ok(json!({ "organization": org? }))
}

fn update(id: &Identity, req: &Request, caller: &Caller) -> Result<Value, OpError> {
    let org_id = req.body.id("org_id")?;
    id.require(req, caller, ORG_UPDATE, Some(org_id))?;
    let slug = req.body.opt_str("slug", MAX_SLUG)?;
    if let Some(slug) = &slug {
        check_slug(slug)?;
    }
    let name = req.body.opt_str("name", MAX_NAME)?;
    if name.as_deref() == Some("") {
        return Err(OpError::invalid("field `name` must not be empty"));
    }
    let fields = OrgFields {
        name,
        slug,
        description: req.body.opt_str("description", MAX_DESCRIPTION)?,
        is_active: req.body.opt_bool("is_active")?,
    };
    let row = id.record(
        req,
        caller.actor(),
        "org.update",
        format!("org:{org_id}"),
        "ok",
    );
    let org = id.write_audited(row, move |conn, _| {
        let org = orgs::update(conn, org_id, &fields, now_secs())?;
        Ok(org)
    })?;
    Ok(json!({ "organization": org }))
}

fn delete(id: &Identity, req: &Request, caller: &Caller) -> Result<Value, OpError> {
    let org_id = req.body.id("org_id")?;
    id.require(req, caller, ORG_DELETE, Some(org_id))?;
    let row = id.record(
        req,
        caller.actor(),
        "org.delete",
        format!("org:{org_id}"),
        "ok",
    );
    let members = id.write_audited(row, move |conn, _| {
        let members = orgs::members(conn, org_id)?;
        orgs::delete(conn, org_id)?;
        notices::changed(conn, &members)?;
        Ok(members)
    })?;
    id.events.changed(members);
    Ok(json!({"deleted": true, "org_id": org_id}))
}

fn list(id: &Identity, req: &Request, caller: &Caller) -> Result<Value, OpError> {
    id.require(req, caller, ORG_READ, None)?;
    let (offset, limit) = req.body.page(50, 100)?;
    let include_inactive = req.body.opt_bool("include_inactive")?.unwrap_or(true);
    let search = req.body.opt_str("search", 100)?.filter(|s| !s.is_empty());
    let (list, total) = id
        .store
        .read(|conn| orgs::list(conn, include_inactive, search.as_deref(), offset, limit))?;
    Ok(json!({"organizations": list, "total": total, "offset": offset, "limit": limit}))
}

/// `members {org_id}`: the members, each with the roles they hold within the organization.
fn members(id: &Identity, req: &Request, caller: &Caller) -> Result<Value, OpError> {
    let org_id = req.body.id("org_id")?;
    require_read(id, req, caller, org_id)?;
    let members = id.store.read(|conn| {
        orgs::get(conn, org_id)?;
        let mut members = Vec::new();
        for user_id in orgs::members(conn, org_id)? {
            let user = users::get(conn, user_id)?;
            let roles: Vec<String> = roles::assignments(conn, user_id)?
                .into_iter()
                .filter(|(_, org)| *org == org_id)
                .map(|(role, _)| role.name)
                .collect();
            members.push(json!({"user": user, "roles": roles}));
        }
        Ok(members)
    })?;
    Ok(json!({"org_id": org_id, "members": members, "total": members.len()}))
}
