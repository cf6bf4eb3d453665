"""Red-black trees as lib/rbtree.c builds them.

Models ``rb_insert_color()`` (``__rb_insert``) and ``rb_erase()`` (``__rb_erase_augmented``
and ``____rb_erase_color``) of lib/rbtree.c, case for case, so that a tree grown and shrunk by
the same sequence of links and erases has the kernel's shape.  The shape is observable where a
caller searches the tree and acts on the first match its descent meets: before 5.12,
vfio_dma_do_unmap() walked with ``vfio_find_dma(iommu, iova, size)``, which returns whichever
overlapping ``vfio_dma`` lies highest on the path from the root (kernel/iommu/type1.py).

The caller links a node the way ``rb_link_node()`` does (``link(parent, left)``, after its own
descent) and then balances it with :meth:`RbTree.insert_color`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(eq=False, slots=True)
class RbNode(Generic[T]):
    """``struct rb_node`` with its payload (the structure ``rb_entry()`` would return)."""

    item: T
    parent: RbNode[T] | None = None
    left: RbNode[T] | None = None
    right: RbNode[T] | None = None
    red: bool = True  # rb_link_node() links a new node red


def _is_red(n: RbNode[T] | None) -> bool:
    return n is not None and n.red


@dataclass(eq=False)
class RbTree(Generic[T]):
    """``struct rb_root``."""

    root: RbNode[T] | None = None
    _size: int = field(default=0)

    def __len__(self) -> int:
        return self._size

    # -- rb_link_node() + rb_insert_color() ------------------------------------------------
    def link(self, item: T, parent: RbNode[T] | None, left: bool) -> RbNode[T]:
        """rb_link_node() at ``parent``'s left or right link, then rb_insert_color()."""
        node: RbNode[T] = RbNode(item, parent)
        if parent is None:
            self.root = node
        elif left:
            parent.left = node
        else:
            parent.right = node
        self._size += 1
        self._insert_color(node)
        return node

    def _change_child(self, old: RbNode[T], new: RbNode[T] | None,
                      parent: RbNode[T] | None) -> None:
        """__rb_change_child()."""
        if parent is None:
            self.root = new
        elif parent.left is old:
            parent.left = new
        else:
            parent.right = new

    def _rotate_set_parents(self, old: RbNode[T], new: RbNode[T], red: bool) -> None:
        """__rb_rotate_set_parents(): ``new`` takes ``old``'s place and colour, ``old``
        becomes ``new``'s child with colour ``red``."""
        parent = old.parent
        new.parent, new.red = parent, old.red
        old.parent, old.red = new, red
        self._change_child(old, new, parent)

    def _insert_color(self, node: RbNode[T]) -> None:
        """__rb_insert()."""
        parent = node.parent
        while True:
            if parent is None:
                node.red = False
                break
            if not parent.red:
                break
            gparent = parent.parent
            assert gparent is not None  # a red node is never the root
            tmp = gparent.right
            if parent is not tmp:  # parent == gparent->rb_left
                if _is_red(tmp):
                    # Case 1 - node's uncle is red (color flips).
                    assert tmp is not None
                    tmp.red = False
                    parent.red = False
                    node = gparent
                    parent = node.parent
                    node.red = True
                    continue
                tmp = parent.right
                if node is tmp:
                    # Case 2 - left rotate at parent
                    tmp = node.left
                    parent.right = tmp
                    node.left = parent
                    if tmp is not None:
                        tmp.parent, tmp.red = parent, False
                    parent.parent, parent.red = node, True
                    parent = node
                    tmp = node.right
                # Case 3 - right rotate at gparent
                gparent.left = tmp
                parent.right = gparent
                if tmp is not None:
                    tmp.parent, tmp.red = gparent, False
                self._rotate_set_parents(gparent, parent, True)
                break
            else:
                tmp = gparent.left
                if _is_red(tmp):
                    # Case 1 - color flips
                    assert tmp is not None
                    tmp.red = False
                    parent.red = False
                    node = gparent
                    parent = node.parent
                    node.red = True
                    continue
                tmp = parent.left
                if node is tmp:
                    # Case 2 - right rotate at parent
                    tmp = node.right
                    parent.left = tmp
                    node.right = parent
                    if tmp is not None:
                        tmp.parent, tmp.red = parent, False
                    parent.parent, parent.red = node, True
                    parent = node
                    tmp = node.left
                # Case 3 - left rotate at gparent
                gparent.right = tmp
                parent.left = gparent
                if tmp is not None:
                    tmp.parent, tmp.red = gparent, False
                self._rotate_set_parents(gparent, parent, True)
                break

    # -- rb_erase() ------------------------------------------------------------------------
    def erase(self, node: RbNode[T]) -> None:
        """rb_erase(): __rb_erase_augmented() then ____rb_erase_color()."""
        self._size -= 1
        child = node.right
        tmp = node.left
        rebalance: RbNode[T] | None
        if tmp is None:
            # Case 1: node to erase has no more than 1 child (easy!)
            parent = node.parent
            self._change_child(node, child, parent)
            if child is not None:
                child.parent, child.red = parent, node.red
                rebalance = None
            else:
                rebalance = parent if not node.red else None
        elif child is None:
            # Still case 1, but this time the child is node->rb_left
            parent = node.parent
            tmp.parent, tmp.red = parent, node.red
            self._change_child(node, tmp, parent)
            rebalance = None
        else:
            successor = child
            tmp = child.left
            if tmp is None:
                # Case 2: node's successor is its right child
                parent = successor
                child2 = successor.right
            else:
                # Case 3: node's successor is leftmost under node's right child subtree
                while tmp is not None:
                    parent = successor
                    successor = tmp
                    tmp = tmp.left
                child2 = successor.right
                parent.left = child2
                successor.right = child
                child.parent = successor
            tmp = node.left
            successor.left = tmp
            tmp.parent = successor
            self._change_child(node, successor, node.parent)
            if child2 is not None:
                child2.parent, child2.red = parent, False
                rebalance = None
            else:
                rebalance = parent if not successor.red else None
            successor.parent, successor.red = node.parent, node.red
        node.parent = node.left = node.right = None
        if rebalance is not None:
            self._erase_color(rebalance)

    def _erase_color(self, parent: RbNode[T]) -> None:
        """____rb_erase_color()."""
        node: RbNode[T] | None = None
        while True:
            sibling = parent.right
            if node is not sibling:  # node == parent->rb_left
                assert sibling is not None
                if sibling.red:
                    # Case 1 - left rotate at parent
                    tmp1 = sibling.left
                    assert tmp1 is not None
                    parent.right = tmp1
                    sibling.left = parent
                    tmp1.parent, tmp1.red = parent, False
                    self._rotate_set_parents(parent, sibling, True)
                    sibling = tmp1
                tmp1 = sibling.right
                if not _is_red(tmp1):
                    tmp2 = sibling.left
                    if not _is_red(tmp2):
                        # Case 2 - sibling color flip
                        sibling.parent, sibling.red = parent, True
                        if parent.red:
                            parent.red = False
                        else:
                            node = parent
                            up = node.parent
                            if up is not None:
                                parent = up
                                continue
                        break
                    # Case 3 - right rotate at sibling
                    assert tmp2 is not None
                    tmp1 = tmp2.right
                    sibling.left = tmp1
                    tmp2.right = sibling
                    parent.right = tmp2
                    if tmp1 is not None:
                        tmp1.parent, tmp1.red = sibling, False
                    tmp1 = sibling
                    sibling = tmp2
                # Case 4 - left rotate at parent + color flips
                assert tmp1 is not None
                tmp2 = sibling.left
                parent.right = tmp2
                sibling.left = parent
                tmp1.parent, tmp1.red = sibling, False
                if tmp2 is not None:
                    tmp2.parent = parent
                self._rotate_set_parents(parent, sibling, False)
                break
            else:
                sibling = parent.left
                assert sibling is not None
                if sibling.red:
                    # Case 1 - right rotate at parent
                    tmp1 = sibling.right
                    assert tmp1 is not None
                    parent.left = tmp1
                    sibling.right = parent
                    tmp1.parent, tmp1.red = parent, False
                    self._rotate_set_parents(parent, sibling, True)
                    sibling = tmp1
                tmp1 = sibling.left
                if not _is_red(tmp1):
                    tmp2 = sibling.right
                    if not _is_red(tmp2):
                        # Case 2 - sibling color flip
                        sibling.parent, sibling.red = parent, True
                        if parent.red:
                            parent.red = False
                        else:
                            node = parent
                            up = node.parent
                            if up is not None:
                                parent = up
                                continue
                        break
                    # Case 3 - left rotate at sibling
                    assert tmp2 is not None
                    tmp1 = tmp2.left
                    sibling.right = tmp1
                    tmp2.left = sibling
                    parent.left = tmp2
                    if tmp1 is not None:
                        tmp1.parent, tmp1.red = sibling, False
                    tmp1 = sibling
                    sibling = tmp2
                # Case 4 - right rotate at parent + color flips
                assert tmp1 is not None
                tmp2 = sibling.right
                parent.left = tmp2
                sibling.right = parent
                tmp1.parent, tmp1.red = sibling, False
                if tmp2 is not None:
                    tmp2.parent = parent
                self._rotate_set_parents(parent, sibling, False)
                break

    # -- introspection ---------------------------------------------------------------------
    def __iter__(self) -> Iterator[T]:
        """In order (rb_first() .. rb_next())."""
        stack: list[RbNode[T]] = []
        n = self.root
        while stack or n is not None:
            while n is not None:
                stack.append(n)
                n = n.left
            n = stack.pop()
            yield n.item
            n = n.right

    def check(self) -> int:
        """Assert the red-black invariants; returns the black height (tests)."""

        def walk(n: RbNode[T] | None, parent: RbNode[T] | None) -> int:
            if n is None:
                return 1
            assert n.parent is parent
            if n.red:
                assert not _is_red(n.left) and not _is_red(n.right)
            lh = walk(n.left, n)
            assert lh == walk(n.right, n)
            return lh + (0 if n.red else 1)

        assert not _is_red(self.root)
        return walk(self.root, None)
