//! Walking the trees of a snapshot: finding the node at a path, listing a
//! file's data blobs, and visiting every entry below a tree. Each tree and
//! chunk list is read through [`Repository::read_tree`] and so checked
//! against its id.

use crate::error::{Error, Result};
use crate::format::tree::{Node, NodeKind};
use crate::id::BlobId;
use crate::repo::Repository;
use crate::repo::chunklist;

/// Finds the node at `path` (components separated by `/`) below `root`;
/// `None` for the root itself.
///
/// # Errors
/// [`Error::NotFound`] when the path does not exist in the snapshot (or
/// passes through something that is not a directory); read errors for
/// damaged trees.
pub fn find_node(repo: &Repository, root: &BlobId, path: &[u8]) -> Result<Option<Node>> {
    let mut tree_id = *root;
    let mut found: Option<Node> = None;
    for comp in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        if let Some(n) = &found {
            match &n.kind {
                NodeKind::Dir { subtree } => tree_id = *subtree,
                _ => {
                    return Err(Error::NotFound(format!(
                        "{} is not a directory in this snapshot",
                        String::from_utf8_lossy(path)
                    )));
                }
            }
        }
        let tree = repo.read_tree(&tree_id)?;
        found = Some(tree.find(comp).cloned().ok_or_else(|| {
            Error::NotFound(format!(
                "{} is not in this snapshot",
                String::from_utf8_lossy(path)
            ))
        })?);
    }
    Ok(found)
}

/// Calls `visit(path, node)` for every entry below `tree`, depth first,
/// with `path` starting from `prefix`.
///
/// # Errors
/// The data blob ids of a regular file's node, in file order: its inline
/// list, or the leaves of its chunk lists (each list read and checked).
///
/// # Errors
/// [`Error::Invalid`] when `node` is not a regular file; reading a list.
pub fn file_content(repo: &Repository, node: &Node) -> Result<Vec<BlobId>> {
    match &node.kind {
        NodeKind::File { content } => Ok(content.clone()),
        NodeKind::ListedFile { list, depth } => chunklist::expand(repo, list, *depth),
        _ => Err(Error::invalid(format!(
            "{} is not a regular file",
            String::from_utf8_lossy(&node.name)
        ))),
    }
}

/// The first tree that cannot be read.
pub fn walk_tree(
    repo: &Repository,
    tree: &BlobId,
    prefix: &[u8],
    visit: &mut dyn FnMut(&[u8], &Node),
) -> Result<()> {
    let t = repo.read_tree(tree)?;
    for node in &t.nodes {
        let mut path = prefix.to_vec();
        if path.last() != Some(&b'/') {
            path.push(b'/');
        }
        path.extend_from_slice(&node.name);
        visit(&path, node);
        if let NodeKind::Dir { subtree } = &node.kind {
            walk_tree(repo, subtree, &path, visit)?;
        }
    }
    Ok(())
}
