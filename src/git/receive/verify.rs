//! Verification of a push before anything moves: every object of the
//! quarantined pack (tree entry names git would refuse to check out,
//! connectivity down to the repo's objects or a shallow boundary) and every
//! command (ref name, expected old value, object type).
//!
//! Reads only; writes nothing to the repository. Does not know the socket
//! or the deploy hook.

use std::collections::HashMap;
use std::path::Path;

use git2::{ObjectType, Oid};

use super::protocol::Cmd;
use super::shallow::read_shallow;
use super::{DELETE_DEPLOY, NOT_A_COMMIT, STALE};
use crate::git::refs::ref_value;
use crate::git::GitError;

/// Trees may nest at most this deep (path components from the root), as
/// git's own `core.maxTreeDepth` default: deeper trees are refused in
/// receive-pack so that nothing downstream (the build context walk, git
/// itself) ever meets one.
pub const MAX_TREE_DEPTH: u32 = 2048;

/// What `check_push` found.
pub(super) struct Checked {
    pub cmds: Vec<Cmd>,
    /// A reason to refuse the whole pack.
    pub pack_error: Option<String>,
    /// Shallow boundaries to record.
    pub shallow: Vec<Oid>,
}

/// Checks the quarantined objects (tree entry names; connectivity for
/// shallow pushes) and every command against the refs as they are now.
pub(super) fn check_push(
    path: &Path,
    qdir: Option<&Path>,
    entries: &[(u64, u8)],
    mut cmds: Vec<Cmd>,
    client_shallow: &[Oid],
    deploy_ref: Option<&str>,
) -> Result<Checked, GitError> {
    // Object ids are not re-hashed on read here: `git::init_process` turns
    // libgit2's strict hash verification off once at start-up.
    // `main` sees only what the repo had before this push; `all` also sees
    // the quarantine.
    let main = git2::Repository::open_bare(path)?;
    let all = git2::Repository::open_bare(path)?;
    let mut pack_error = None;
    let mut shallow = Vec::new();
    if let Some(qdir) = qdir {
        let qstr = qdir
            .to_str()
            .ok_or_else(|| GitError::Protocol("non-UTF-8 repo path".into()))?;
        all.odb()?.add_disk_alternate(qstr)?;
        let q = git2::Odb::new()?;
        q.add_disk_alternate(qstr)?;
        // The repo's own shallow commits lack their parents too.
        let mut boundary = read_shallow(path)?;
        boundary.extend_from_slice(client_shallow);
        let order = pack_order(&qdir.join("pack"))?;
        match check_pack(&q, &main.odb()?, order, entries, &boundary)? {
            Ok(PackFacts {
                shallow: s,
                too_deep,
            }) => {
                shallow = s;
                // Refused per command, so the client sees the reason on
                // its `! [remote rejected]` line.
                if let Some(reason) = too_deep {
                    for c in cmds.iter_mut().filter(|c| !c.is_delete()) {
                        c.error = Some(reason.clone());
                    }
                }
            }
            Err(e) => pack_error = Some(e),
        }
    }
    let mut seen = std::collections::HashSet::new();
    let all_odb = all.odb()?;
    for c in cmds.iter_mut().filter(|c| c.error.is_none()) {
        c.error = check_command(&main, &all, &all_odb, c, deploy_ref, &mut seen);
    }
    Ok(Checked {
        cmds,
        pack_error,
        shallow,
    })
}

fn check_command(
    main: &git2::Repository,
    all: &git2::Repository,
    all_odb: &git2::Odb<'_>,
    c: &mut Cmd,
    deploy_ref: Option<&str>,
    seen: &mut std::collections::HashSet<String>,
) -> Option<String> {
    if !c.refname.starts_with("refs/") || !git2::Reference::is_valid_name(&c.refname) {
        return Some(super::protocol::FUNNY_REFNAME.into());
    }
    if !seen.insert(c.refname.clone()) {
        return Some("duplicate ref in one push".into());
    }
    match ref_value(main, &c.refname) {
        Ok(current) if current != c.old => return Some(STALE.into()),
        Ok(_) => {}
        Err(e) => return Some(format!("cannot read ref: {}", e.message())),
    }
    if c.is_delete() {
        if deploy_ref == Some(c.refname.as_str()) {
            return Some(DELETE_DEPLOY.into());
        }
        return None;
    }
    if !all_odb.exists(c.new) {
        return Some("missing necessary objects".into());
    }
    // As in git (and `git fsck`): a branch points at a commit, never at a
    // tag object; push `TAG^{commit}:BRANCH` instead.
    if c.refname.starts_with("refs/heads/") {
        match all.find_object(c.new, None) {
            Ok(o) if o.kind() == Some(ObjectType::Commit) => c.commit = Some(c.new),
            _ => return Some(NOT_A_COMMIT.into()),
        }
    }
    None
}

/// The objects of the pack in `pack_dir` (the quarantine's one) and their
/// offsets, in pack order, from its index (version 2; gitformat-pack).
/// Reading in pack order lets libgit2's delta base cache serve each
/// delta's base; in id order, every read walks its delta chain again.
fn pack_order(pack_dir: &Path) -> Result<Vec<(u64, Oid)>, GitError> {
    use std::os::unix::fs::FileExt;
    let bad = |why: &str| GitError::Protocol(format!("unreadable pack index: {why}"));
    let idx = match std::fs::read_dir(pack_dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "idx")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let Some(idx) = idx else {
        return Ok(Vec::new());
    };
    let f = std::fs::File::open(&idx)?;
    let mut head = vec![0u8; 8 + 256 * 4];
    f.read_exact_at(&mut head, 0)?;
    if head[..8] != *b"\xfftOc\0\0\0\x02" {
        return Err(bad("not version 2"));
    }
    let n = u32::from_be_bytes(head[head.len() - 4..].try_into().expect("4 bytes")) as u64;
    let ids_at = head.len() as u64;
    let offsets_at = ids_at + n * 24;
    let mut ids = vec![0u8; (n * 20) as usize];
    f.read_exact_at(&mut ids, ids_at)?;
    let mut offsets = vec![0u8; (n * 4) as usize];
    f.read_exact_at(&mut offsets, offsets_at)?;
    let mut order = Vec::with_capacity(n as usize);
    for (id, off) in ids.chunks_exact(20).zip(offsets.chunks_exact(4)) {
        let off = u32::from_be_bytes(off.try_into().expect("4 bytes"));
        let off = if off & 0x8000_0000 == 0 {
            off as u64
        } else {
            let mut big = [0u8; 8];
            let at = offsets_at + n * 4 + (off & 0x7fff_ffff) as u64 * 8;
            f.read_exact_at(&mut big, at)
                .map_err(|_| bad("64-bit offset out of range"))?;
            u64::from_be_bytes(big)
        };
        order.push((off, Oid::from_bytes(id)?));
    }
    order.sort_unstable_by_key(|e| e.0);
    Ok(order)
}

/// Checks every object of the quarantined pack `q` (`order`: its ids in
/// pack order; `entries`: the types the scanner saw), reading each commit,
/// tree and tag once, in pack order:
/// - trees with entries git itself would never check out (`.`, `..`, `.git`
///   in any case, malformed names) refuse the pack;
/// - connectivity: every id a pack object names is in the pack or was in
///   the repo before (`main`, complete by induction), so whatever the new
///   refs reach is complete. Shallow commits (`shallow`: the client's and
///   the repo's) may lack their parents: those in the pack whose parents
///   the repo lacks too are returned, to be recorded in `shallow`.
///
/// `Ok(Err(reason))` refuses the pack. Same guarantee as libgit2's indexer
/// verification (and git's `check_connected`), but the repo's ODB is only
/// asked about the ids the pack does not have: the boundary.
///
/// Also measures how deep the pack's trees nest ([`MAX_TREE_DEPTH`]),
/// counting the repo trees they include.
fn check_pack(
    q: &git2::Odb<'_>,
    main: &git2::Odb<'_>,
    order: Vec<(u64, Oid)>,
    entries: &[(u64, u8)],
    shallow: &[Oid],
) -> Result<Result<PackFacts, String>, GitError> {
    use std::collections::HashSet;
    let id_of = |oid: &Oid| -> Id { oid.as_bytes().try_into().expect("sha1 ids") };
    let in_pack: HashSet<Id> = order.iter().map(|(_, oid)| id_of(oid)).collect();
    // Each pack tree's subtrees, for the depth check.
    let mut pack_trees: HashMap<Id, Vec<Id>> = HashMap::new();
    let boundary: HashSet<Id> = shallow.iter().map(id_of).collect();
    // Ids named by pack objects but not in the pack.
    let mut outside: HashSet<Id> = HashSet::new();
    let mut record = Vec::new();
    for (offset, oid) in order {
        // Objects the indexer appended to complete a thin pack came from
        // the repo: nothing to check.
        let Ok(i) = entries.binary_search_by_key(&offset, |e| e.0) else {
            continue;
        };
        let kind = match entries[i].1 {
            1 => ObjectType::Commit,
            2 => ObjectType::Tree,
            3 => continue,
            4 => ObjectType::Tag,
            _ => match q.read_header(oid)?.1 {
                ObjectType::Blob => continue,
                k => k,
            },
        };
        let obj = q.read(oid)?;
        let data = obj.data();
        let mut need = |id: &[u8]| {
            let id: Id = id.try_into().expect("20 bytes");
            if !in_pack.contains(&id) {
                outside.insert(id);
            }
        };
        match kind {
            ObjectType::Tree => {
                if let Some(name) = bad_tree_entry(data) {
                    return Ok(Err(format!(
                        "tree {} has an entry named '{}', which git refuses to check out",
                        &oid.to_string()[..12],
                        crate::names::printable(&name)
                    )));
                }
                let mut d = data;
                let mut subtrees = Vec::new();
                while !d.is_empty() {
                    // Well-formed: bad_tree_entry checked it.
                    let sp = d.iter().position(|&b| b == b' ').unwrap_or(0);
                    let rest = &d[sp + 1..];
                    let nul = rest.iter().position(|&b| b == 0).unwrap_or(0);
                    let id = &rest[nul + 1..nul + 21];
                    // Submodules (gitlinks) point into other repositories.
                    if &d[..sp] != b"160000" {
                        need(id);
                    }
                    if &d[..sp] == b"40000" {
                        subtrees.push(id.try_into().expect("20 bytes"));
                    }
                    d = &rest[nul + 21..];
                }
                pack_trees.insert(id_of(&oid), subtrees);
            }
            ObjectType::Commit => {
                let Some((tree, parents)) = commit_links(data) else {
                    return Ok(Err(format!("malformed commit {oid}")));
                };
                need(tree.as_bytes());
                if boundary.contains(&id_of(&oid)) {
                    if parents
                        .iter()
                        .any(|p| !in_pack.contains(&id_of(p)) && !main.exists(*p))
                    {
                        record.push(oid);
                    }
                } else {
                    parents.iter().for_each(|p| need(p.as_bytes()));
                }
            }
            ObjectType::Tag => match tag_target(data) {
                Some(target) => need(target.as_bytes()),
                None => return Ok(Err(format!("malformed tag {oid}"))),
            },
            _ => {}
        }
    }
    let mut outside: Vec<Id> = outside.into_iter().collect();
    outside.sort_unstable();
    for id in outside {
        let oid = Oid::from_bytes(&id)?;
        if !main.exists(oid) {
            return Ok(Err(format!("missing necessary objects ({oid})")));
        }
    }
    let too_deep = too_deep(&pack_trees, main, MAX_TREE_DEPTH)?.map(|id| {
        format!(
            "tree {} nests deeper than {MAX_TREE_DEPTH} levels (git's core.maxTreeDepth)",
            &hex(&id)[..12]
        )
    });
    Ok(Ok(PackFacts {
        shallow: record,
        too_deep,
    }))
}

/// A raw object id: hashing and comparing an `Oid` goes through libgit2.
type Id = [u8; 20];

/// What `check_pack` found in a pack it accepts.
struct PackFacts {
    /// Shallow boundaries to record.
    shallow: Vec<Oid>,
    /// Why the pack's trees nest too deep, if they do.
    too_deep: Option<String>,
}

fn hex(id: &Id) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// The first tree (of the pack, or one of the repo's that a pack tree
/// includes) whose subtrees nest more than `limit` levels, if any.
/// Iterative, with each tree's height computed once: the walk's memory is
/// bounded by the number of trees, its stack by `limit`.
pub(super) fn too_deep(
    pack_trees: &HashMap<Id, Vec<Id>>,
    main: &git2::Odb<'_>,
    limit: u32,
) -> Result<Option<Id>, GitError> {
    let mut height: HashMap<Id, u32> = HashMap::new();
    // Subtrees of the repo's trees that pack trees include.
    let mut repo_trees: HashMap<Id, Vec<Id>> = HashMap::new();
    for &root in pack_trees.keys() {
        if height.contains_key(&root) {
            continue;
        }
        let mut stack: Vec<(Id, usize)> = vec![(root, 0)];
        while let Some(&(id, next)) = stack.last() {
            if !pack_trees.contains_key(&id) && !repo_trees.contains_key(&id) {
                repo_trees.insert(id, repo_subtrees(main, &id)?);
            }
            let kids = pack_trees
                .get(&id)
                .or_else(|| repo_trees.get(&id))
                .expect("loaded above");
            match kids.get(next) {
                Some(kid) => {
                    stack.last_mut().expect("non-empty").1 += 1;
                    if !height.contains_key(kid) {
                        if stack.len() as u32 >= limit {
                            return Ok(Some(root));
                        }
                        stack.push((*kid, 0));
                    }
                }
                None => {
                    let h = 1 + kids.iter().map(|k| height[k]).max().unwrap_or(0);
                    if h > limit {
                        return Ok(Some(root));
                    }
                    height.insert(id, h);
                    stack.pop();
                }
            }
        }
    }
    Ok(None)
}

/// The subtrees of one of the repo's trees.
fn repo_subtrees(main: &git2::Odb<'_>, id: &Id) -> Result<Vec<Id>, GitError> {
    let obj = main.read(Oid::from_bytes(id)?)?;
    let mut d = obj.data();
    let mut out = Vec::new();
    while !d.is_empty() {
        let (Some(sp), Some(nul)) = (
            d.iter().position(|&b| b == b' '),
            d.iter().position(|&b| b == 0),
        ) else {
            break;
        };
        if d.len() < nul + 21 {
            break;
        }
        if &d[..sp] == b"40000" {
            out.push(d[nul + 1..nul + 21].try_into().expect("20 bytes"));
        }
        d = &d[nul + 21..];
    }
    Ok(out)
}

/// The first forbidden entry name in raw tree data.
pub(super) fn bad_tree_entry(mut data: &[u8]) -> Option<String> {
    while !data.is_empty() {
        let Some(sp) = data.iter().position(|&b| b == b' ') else {
            return Some("<malformed tree>".into());
        };
        let rest = &data[sp + 1..];
        let Some(nul) = rest.iter().position(|&b| b == 0) else {
            return Some("<malformed tree>".into());
        };
        let name = &rest[..nul];
        if name.is_empty()
            || name == b"."
            || name == b".."
            || name.eq_ignore_ascii_case(b".git")
            || name.contains(&b'/')
        {
            return Some(String::from_utf8_lossy(name).into_owned());
        }
        if rest.len() < nul + 1 + 20 {
            return Some("<malformed tree>".into());
        }
        data = &rest[nul + 1 + 20..];
    }
    None
}

fn header_lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|&b| b == b'\n').take_while(|l| !l.is_empty())
}

fn hex_oid(s: &[u8]) -> Option<Oid> {
    Oid::from_str(std::str::from_utf8(s).ok()?).ok()
}

fn commit_links(data: &[u8]) -> Option<(Oid, Vec<Oid>)> {
    let mut tree = None;
    let mut parents = Vec::new();
    for l in header_lines(data) {
        if let Some(h) = l.strip_prefix(b"tree ") {
            tree = hex_oid(h);
        } else if let Some(h) = l.strip_prefix(b"parent ") {
            parents.push(hex_oid(h)?);
        }
    }
    Some((tree?, parents))
}

fn tag_target(data: &[u8]) -> Option<Oid> {
    header_lines(data).find_map(|l| l.strip_prefix(b"object ").and_then(hex_oid))
}
