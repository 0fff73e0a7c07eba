//! What in a write could make members compute different results: functions that are not
//! immutable (`now()`, `random()`, `gen_random_uuid()`, `clock_timestamp()`, SQL value
//! functions such as CURRENT_TIMESTAMP) and sequences. A write with such a function is
//! refused before it is appended, naming the function, unless
//! `pg_paxos.allow_mutable_functions` is on. `nextval()` (and identity columns) are allowed
//! on sequences owned by a table of the same group: every member advances its copy of the
//! sequence at the same rounds, so serial and identity keys come out the same everywhere.
//! So is `paxos_write_round()`, the write's own round, the same on every member.
use std::collections::BTreeMap;
use std::ffi::{c_void, CStr};

use pgrx::pg_sys;
use pgrx::prelude::*;

/// What `inspect` found in a statement.
#[derive(Default)]
pub struct Findings {
    /// The first function that is not immutable (other than `nextval`), as `name()`.
    pub mutable: Option<String>,
    /// The sequences `nextval` or an identity column draws from.
    pub sequences: Vec<pg_sys::Oid>,
    /// The `$n` parameters the statement uses, by number, with their types.
    pub params: BTreeMap<i32, pg_sys::Oid>,
}

/// Walks `query`, its subqueries and CTEs.
pub fn inspect(query: *mut pg_sys::Query) -> Findings {
    let mut findings = Findings::default();
    // SAFETY: a valid analysed Query; the walker only reads it.
    unsafe {
        pg_sys::query_tree_walker(query, Some(walk), &mut findings as *mut _ as *mut c_void, 0);
    }
    findings
}

#[pg_guard]
unsafe extern "C-unwind" fn walk(node: *mut pg_sys::Node, context: *mut c_void) -> bool {
    use pg_sys::NodeTag::*;
    if node.is_null() {
        return false;
    }
    // SAFETY: context is the Findings passed by `inspect`; each cast matches the node's tag.
    unsafe {
        if (*node).type_ == T_Query {
            return pg_sys::query_tree_walker(node as *mut pg_sys::Query, Some(walk), context, 0);
        }
        // Arguments first, so that `now()::text` is reported as now(), not as the cast.
        if pg_sys::expression_tree_walker(node, Some(walk), context) {
            return true;
        }
        let findings = &mut *(context as *mut Findings);
        match (*node).type_ {
            T_Param => {
                let param = node as *mut pg_sys::Param;
                if (*param).paramkind == pg_sys::ParamKind::PARAM_EXTERN {
                    findings.params.insert((*param).paramid, (*param).paramtype);
                }
            }
            T_NextValueExpr => findings
                .sequences
                .push((*(node as *mut pg_sys::NextValueExpr)).seqid),
            T_SQLValueFunction => note(findings, "a SQL value function such as CURRENT_TIMESTAMP"),
            T_FuncExpr
                if (*(node as *mut pg_sys::FuncExpr)).funcid
                    == pg_sys::Oid::from(pg_sys::F_NEXTVAL) =>
            {
                match constant_oid((*(node as *mut pg_sys::FuncExpr)).args) {
                    Some(sequence) => findings.sequences.push(sequence),
                    None => note(findings, "nextval() of a computed sequence name"),
                }
            }
            _ if concatenates_immutable_text(node) => {}
            _ => {
                pg_sys::check_functions_in_node(node, Some(function), context);
            }
        }
        false
    }
}

/// Whether `node` is `text || value` (or `value || text`) where turning the value into text
/// is immutable, as for integers: the function is only stable because some types' text forms
/// depend on settings (timestamps, say), so it is judged by the cast it makes, `value::text`.
unsafe fn concatenates_immutable_text(node: *mut pg_sys::Node) -> bool {
    use pg_sys::NodeTag::*;
    // SAFETY: each cast matches the node's tag; catalog lookups by OID.
    unsafe {
        let (function, args) = match (*node).type_ {
            T_FuncExpr => {
                let call = node as *mut pg_sys::FuncExpr;
                ((*call).funcid, (*call).args)
            }
            T_OpExpr => {
                let op = node as *mut pg_sys::OpExpr;
                pg_sys::set_opfuncid(op);
                ((*op).opfuncid, (*op).args)
            }
            _ => return false,
        };
        let value = match u32::from(function) {
            pg_sys::F_TEXTANYCAT => 1,
            pg_sys::F_ANYTEXTCAT => 0,
            _ => return false,
        };
        if args.is_null() || (*args).length != 2 {
            return false;
        }
        let arg = (*(*args).elements.add(value)).ptr_value as *mut pg_sys::Node;
        let source = pg_sys::exprType(arg);
        let mut cast = pg_sys::Oid::INVALID;
        let path = pg_sys::find_coercion_pathway(
            pg_sys::TEXTOID,
            source,
            pg_sys::CoercionContext::COERCION_EXPLICIT,
            &mut cast,
        );
        let immutable =
            |f: pg_sys::Oid| pg_sys::func_volatile(f) as u8 == pg_sys::PROVOLATILE_IMMUTABLE;
        match path {
            pg_sys::CoercionPathType::COERCION_PATH_RELABELTYPE => true,
            pg_sys::CoercionPathType::COERCION_PATH_FUNC => immutable(cast),
            pg_sys::CoercionPathType::COERCION_PATH_COERCEVIAIO => {
                let (mut output, mut varlena) = (pg_sys::Oid::INVALID, false);
                pg_sys::getTypeOutputInfo(source, &mut output, &mut varlena);
                immutable(output)
            }
            _ => false,
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn function(id: pg_sys::Oid, context: *mut c_void) -> bool {
    // SAFETY: context is the Findings passed by `inspect`; catalog lookups by OID.
    unsafe {
        if pg_sys::func_volatile(id) as u8 != pg_sys::PROVOLATILE_IMMUTABLE && !is_write_round(id) {
            let name = pg_sys::get_func_name(id);
            let name = if name.is_null() {
                format!("function {}", u32::from(id))
            } else {
                format!("{}()", CStr::from_ptr(name).to_string_lossy())
            };
            note(&mut *(context as *mut Findings), &name);
        }
    }
    false
}

/// Whether `id` is pg_paxos's own `paxos_write_round()`: a C function (only a superuser can
/// create one) with its symbol, whatever its name or schema, so that no user's function
/// passes for it.
unsafe fn is_write_round(id: pg_sys::Oid) -> bool {
    // SAFETY: a syscache lookup by OID, released below; attributes read while it is held.
    unsafe {
        let cache = pg_sys::SysCacheIdentifier::PROCOID as i32;
        let tuple = pg_sys::SearchSysCache1(cache, pg_sys::Datum::from(id));
        if tuple.is_null() {
            return false;
        }
        let text = |attribute: u32| {
            let mut null = false;
            let value = pg_sys::SysCacheGetAttr(cache, tuple, attribute as i16, &mut null);
            (!null).then(|| {
                let c = pg_sys::text_to_cstring(value.cast_mut_ptr());
                CStr::from_ptr(c).to_string_lossy().into_owned()
            })
        };
        let native = text(pg_sys::Anum_pg_proc_probin).is_some();
        let ours = native && text(pg_sys::Anum_pg_proc_prosrc).as_deref() == Some(WRITE_ROUND);
        pg_sys::ReleaseSysCache(tuple);
        ours
    }
}

/// The C symbol of `paxos_write_round()`.
const WRITE_ROUND: &str = "paxos_write_round_wrapper";

fn note(findings: &mut Findings, what: &str) {
    findings.mutable.get_or_insert_with(|| what.to_owned());
}

/// The OID in a one-argument list holding a constant (`nextval('s'::regclass)`).
unsafe fn constant_oid(args: *mut pg_sys::List) -> Option<pg_sys::Oid> {
    // SAFETY: a FuncExpr's argument list.
    unsafe {
        if args.is_null() || (*args).length != 1 {
            return None;
        }
        let arg = (*(*args).elements).ptr_value as *mut pg_sys::Node;
        if (*arg).type_ != pg_sys::NodeTag::T_Const || (*(arg as *mut pg_sys::Const)).constisnull {
            return None;
        }
        Some(pg_sys::Oid::from(
            (*(arg as *mut pg_sys::Const)).constvalue.value() as u32,
        ))
    }
}

/// The table owning `sequence` as a serial or identity column, if any.
pub fn owner_table(sequence: pg_sys::Oid) -> Option<pg_sys::Oid> {
    // SAFETY: dependency lookups by OID.
    unsafe {
        for kind in [
            pg_sys::DependencyType::DEPENDENCY_AUTO,
            pg_sys::DependencyType::DEPENDENCY_INTERNAL,
        ] {
            let (mut table, mut column) = (pg_sys::Oid::INVALID, 0);
            if pg_sys::sequenceIsOwned(sequence, kind as std::ffi::c_char, &mut table, &mut column)
            {
                return Some(table);
            }
        }
    }
    None
}
