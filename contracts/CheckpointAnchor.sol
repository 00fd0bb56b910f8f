// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title CheckpointAnchor
/// @notice Records signed transparency-log checkpoints (origin, tree size, root hash) so that a
///         rollback of the log's database is detectable: a log can only grow, and every size it
///         ever reported stays here with its root.
/// @dev Guarantees: only the owner (the log's account; the deployer unless ownership was
///      transferred) can add anchors; per origin, anchored sizes strictly increase; anchors are
///      never changed or removed. The contract does not check that the root matches the size;
///      clients verify the log's signed checkpoints and consistency proofs against these anchors.
contract CheckpointAnchor {
    struct Anchor {
        uint64 size;
        uint64 timestamp;
        bytes32 root;
    }

    /// @notice The only account allowed to anchor.
    address public owner;

    mapping(bytes32 originHash => Anchor[]) private _anchors;

    event Anchored(bytes32 indexed originHash, uint64 size, bytes32 root);
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);

    error NotOwner(address caller);
    error SizeNotIncreasing(uint64 latestSize, uint64 size);
    error ZeroAddress();
    error IndexOutOfRange(uint256 index, uint256 count);

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        _;
    }

    constructor() {
        owner = msg.sender;
        emit OwnershipTransferred(address(0), msg.sender);
    }

    /// @notice Record that log `origin` had tree `size` with Merkle `root`.
    /// @dev Reverts with NotOwner for any caller but the owner, and with SizeNotIncreasing unless
    ///      `size` is greater than the last anchored size of `origin` (the first may be any size,
    ///      0 included).
    function anchor(string calldata origin, uint64 size, bytes32 root) external onlyOwner {
        bytes32 originHash = keccak256(bytes(origin));
        Anchor[] storage list = _anchors[originHash];
        uint256 count = list.length;
        if (count > 0 && size <= list[count - 1].size) {
            revert SizeNotIncreasing(list[count - 1].size, size);
        }
        list.push(Anchor({size: size, timestamp: uint64(block.timestamp), root: root}));
        emit Anchored(originHash, size, root);
    }

    /// @notice How many anchors `origin` has.
    function anchorCount(string calldata origin) external view returns (uint256) {
        return _anchors[keccak256(bytes(origin))].length;
    }

    /// @notice The `i`-th anchor of `origin`, oldest first; reverts with IndexOutOfRange.
    function anchorAt(string calldata origin, uint256 i)
        external
        view
        returns (uint64 size, bytes32 root, uint64 timestamp)
    {
        Anchor[] storage list = _anchors[keccak256(bytes(origin))];
        if (i >= list.length) revert IndexOutOfRange(i, list.length);
        Anchor storage a = list[i];
        return (a.size, a.root, a.timestamp);
    }

    /// @notice The newest anchor of `origin`, or all zeros when it has none.
    function latest(string calldata origin)
        external
        view
        returns (uint64 size, bytes32 root, uint64 timestamp)
    {
        Anchor[] storage list = _anchors[keccak256(bytes(origin))];
        if (list.length == 0) return (0, bytes32(0), 0);
        Anchor storage a = list[list.length - 1];
        return (a.size, a.root, a.timestamp);
    }

    /// @notice Hand anchoring over to `newOwner` (e.g. after rotating the log's account).
    function transferOwnership(address newOwner) external onlyOwner {
        if (newOwner == address(0)) revert ZeroAddress();
        emit OwnershipTransferred(owner, newOwner);
        owner = newOwner;
    }
}
