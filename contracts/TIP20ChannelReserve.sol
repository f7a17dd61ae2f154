// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.28;

/// Tollgate's local-chain stand-in for the TIP-1034 "TIP-20 Channel Reserve"
/// precompile (Session v2). Written from the TIP-1034 text and the
/// `ITIP20ChannelReserve` interface: same functions, events, errors, EIP-712
/// domain ("TIP20 Channel Reserve", version "1"), channel-id derivation,
/// packed one-slot state and close grace period. The devnet places its
/// runtime code at the precompile address with `anvil_setCode`.
///
/// What a contract cannot do like the precompile (the transaction's
/// expiring-nonce hash, approve-less funding, TIP-1020 signatures) is listed
/// in docs/sessions.md, "The local chain's channel reserve".
/// For local development chains only; not audited.

interface ITIP20Token {
    function transfer(address to, uint256 amount) external returns (bool);
    function transferFrom(address from, address to, uint256 amount) external returns (bool);
    function transferPolicyId() external view returns (uint64);
}

contract TIP20ChannelReserve {
    struct ChannelDescriptor {
        address payer;
        address payee;
        address operator;
        address token;
        bytes32 salt;
        address authorizedSigner;
        bytes32 expiringNonceHash;
    }

    struct ChannelState {
        uint96 settled;
        uint96 deposit;
        uint32 closeRequestedAt;
    }

    struct Channel {
        ChannelDescriptor descriptor;
        ChannelState state;
    }

    uint64 public constant CLOSE_GRACE_PERIOD = 15 minutes;
    bytes32 public constant VOUCHER_TYPEHASH =
        keccak256("Voucher(bytes32 channelId,uint96 cumulativeAmount)");

    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 private constant NAME_HASH = keccak256("TIP20 Channel Reserve");
    bytes32 private constant VERSION_HASH = keccak256("1");
    /// secp256k1n / 2: a larger `s` is the malleable twin of a valid signature.
    uint256 private constant MAX_LOW_S =
        0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;
    uint256 private constant UINT96_MAX = type(uint96).max;
    /// TIP-20 tokens live at 0x20C0000000000000000000xxxxxxxxxxxxxxxxxxxxx.
    uint256 private constant TIP20_PREFIX = 0x20C000000000000000000000;
    /// TIP-1022 virtual addresses carry ten 0xFD bytes at bytes 4..13.
    uint256 private constant VIRTUAL_MAGIC = 0xFDFDFDFDFDFDFDFDFDFD;
    address private constant TIP403_REGISTRY = 0x403c000000000000000000000000000000000000;
    /// Salt for the transient "opened in this transaction" marks.
    bytes32 private constant OPENED_THIS_TX = keccak256("TIP20ChannelReserve.openedThisTx");

    // ---- storage (slot numbers are read by tollgate-devnet; keep the order) ----

    /// slot 0: channelId => packed ChannelState (settled | deposit << 96 | closeRequestedAt << 192).
    mapping(bytes32 => uint256) private packedStates;
    /// slot 1: payer => reusable channel storage credits.
    mapping(address => uint64) private credits;
    /// slot 2: the devnet RPC front writes the opening transaction's
    /// expiring-nonce hash here, keyed by keccak256(abi.encode(payer, payee,
    /// operator, token, salt, authorizedSigner)), before forwarding it.
    mapping(bytes32 => bytes32) private openContext;
    /// slot 3: set only through eth_call / eth_estimateGas state overrides,
    /// standing in for the node's RPC-simulation context hash.
    bytes32 private simulationContext;

    event ChannelOpened(
        bytes32 indexed channelId,
        address indexed payer,
        address indexed payee,
        address operator,
        address token,
        address authorizedSigner,
        bytes32 salt,
        bytes32 expiringNonceHash,
        uint96 deposit
    );
    event Settled(
        bytes32 indexed channelId,
        address indexed payer,
        address indexed payee,
        uint96 cumulativeAmount,
        uint96 deltaPaid,
        uint96 newSettled
    );
    event TopUp(
        bytes32 indexed channelId,
        address indexed payer,
        address indexed payee,
        uint96 additionalDeposit,
        uint96 newDeposit
    );
    event CloseRequested(
        bytes32 indexed channelId, address indexed payer, address indexed payee, uint256 closeGraceEnd
    );
    event ChannelClosed(
        bytes32 indexed channelId,
        address indexed payer,
        address indexed payee,
        uint96 settledToPayee,
        uint96 refundedToPayer
    );
    event CloseRequestCancelled(bytes32 indexed channelId, address indexed payer, address indexed payee);

    error ChannelAlreadyExists();
    error ChannelNotFound();
    error NotPayer();
    error NotPayeeOrOperator();
    error InvalidPayee();
    error InvalidToken();
    error ZeroDeposit();
    error ExpiringNonceHashNotSet();
    error InvalidSignature();
    error AmountExceedsDeposit();
    error AmountNotIncreasing();
    error CaptureAmountInvalid();
    error CloseNotReady();
    error DepositOverflow();
    /// TIP-20's error for a transfer its TIP-403 policy refuses.
    error PolicyForbids();
    /// Tempo precompiles' answer to a selector they do not have.
    error UnknownFunctionSelector(bytes4 selector);

    /// Like the precompile: calldata without a selector reverts bare, an
    /// unknown selector names itself.
    fallback() external {
        if (msg.data.length < 4) revert();
        revert UnknownFunctionSelector(bytes4(msg.data[:4]));
    }

    // ---- channel lifecycle ----

    function open(
        address payee,
        address operator,
        address token,
        uint96 deposit,
        bytes32 salt,
        address authorizedSigner
    ) external returns (bytes32 channelId) {
        if (payee == address(0) || isTip20(payee) || (isVirtual(payee) && (operator == address(0) || isVirtual(operator)))) {
            revert InvalidPayee();
        }
        if (!isTip20(token)) revert InvalidToken();
        if (deposit == 0) revert ZeroDeposit();

        bytes32 nonceHash = openingTransactionHash(msg.sender, payee, operator, token, salt, authorizedSigner);
        channelId = computeChannelId(msg.sender, payee, operator, token, salt, authorizedSigner, nonceHash);
        if (packedStates[channelId] != 0 || openedThisTx(channelId)) revert ChannelAlreadyExists();

        requireAuthorized(token, payee, ITIP403Roles.isAuthorizedRecipient.selector);
        pull(token, msg.sender, deposit);

        packedStates[channelId] = pack(0, deposit, 0);
        spendCredit(msg.sender);
        markOpenedThisTx(channelId);

        emit ChannelOpened(channelId, msg.sender, payee, operator, token, authorizedSigner, salt, nonceHash, deposit);
    }

    function settle(ChannelDescriptor calldata descriptor, uint96 cumulativeAmount, bytes calldata signature)
        external
    {
        bytes32 channelId = idOf(descriptor);
        ChannelState memory state = existing(channelId);
        requirePayeeSide(descriptor);
        if (cumulativeAmount > state.deposit) revert AmountExceedsDeposit();
        if (cumulativeAmount <= state.settled) revert AmountNotIncreasing();
        requireVoucher(descriptor, channelId, cumulativeAmount, signature);
        requireAuthorized(descriptor.token, descriptor.payer, ITIP403Roles.isAuthorizedSender.selector);

        uint96 delta = cumulativeAmount - state.settled;
        packedStates[channelId] = pack(cumulativeAmount, state.deposit, state.closeRequestedAt);
        pay(descriptor.token, descriptor.payee, delta);

        emit Settled(channelId, descriptor.payer, descriptor.payee, cumulativeAmount, delta, cumulativeAmount);
    }

    function topUp(ChannelDescriptor calldata descriptor, uint96 additionalDeposit) external {
        bytes32 channelId = idOf(descriptor);
        ChannelState memory state = existing(channelId);
        if (msg.sender != descriptor.payer) revert NotPayer();
        bool cancelsClose = state.closeRequestedAt != 0;
        // Nothing to add and nothing to cancel: a no-op without an event.
        if (additionalDeposit == 0 && !cancelsClose) return;

        if (additionalDeposit != 0) {
            uint256 grown = uint256(state.deposit) + additionalDeposit;
            if (grown > UINT96_MAX) revert DepositOverflow();
            state.deposit = uint96(grown);
            requireAuthorized(descriptor.token, descriptor.payee, ITIP403Roles.isAuthorizedRecipient.selector);
            pull(descriptor.token, msg.sender, additionalDeposit);
        }
        packedStates[channelId] = pack(state.settled, state.deposit, 0);

        if (cancelsClose) emit CloseRequestCancelled(channelId, descriptor.payer, descriptor.payee);
        emit TopUp(channelId, descriptor.payer, descriptor.payee, additionalDeposit, state.deposit);
    }

    function requestClose(ChannelDescriptor calldata descriptor) external {
        bytes32 channelId = idOf(descriptor);
        ChannelState memory state = existing(channelId);
        if (msg.sender != descriptor.payer) revert NotPayer();
        // Later calls keep the first request's timestamp.
        if (state.closeRequestedAt != 0) return;

        uint32 now32 = block.timestamp > type(uint32).max ? type(uint32).max : uint32(block.timestamp);
        packedStates[channelId] = pack(state.settled, state.deposit, now32);
        emit CloseRequested(channelId, descriptor.payer, descriptor.payee, block.timestamp + CLOSE_GRACE_PERIOD);
    }

    function close(
        ChannelDescriptor calldata descriptor,
        uint96 cumulativeAmount,
        uint96 captureAmount,
        bytes calldata signature
    ) external {
        bytes32 channelId = idOf(descriptor);
        ChannelState memory state = existing(channelId);
        requirePayeeSide(descriptor);
        if (captureAmount < state.settled || captureAmount > cumulativeAmount) revert CaptureAmountInvalid();
        // The voucher may exceed the deposit; what is captured may not.
        if (captureAmount > state.deposit) revert AmountExceedsDeposit();
        // Capturing nothing new needs no voucher.
        if (captureAmount > state.settled) requireVoucher(descriptor, channelId, cumulativeAmount, signature);

        uint96 delta = captureAmount - state.settled;
        uint96 refund = state.deposit - captureAmount;
        deleteChannel(channelId, descriptor.payer);
        if (delta != 0) {
            requireAuthorized(descriptor.token, descriptor.payer, ITIP403Roles.isAuthorizedSender.selector);
            pay(descriptor.token, descriptor.payee, delta);
        }
        if (refund != 0) pay(descriptor.token, descriptor.payer, refund);

        emit ChannelClosed(channelId, descriptor.payer, descriptor.payee, captureAmount, refund);
    }

    function withdraw(ChannelDescriptor calldata descriptor) external {
        bytes32 channelId = idOf(descriptor);
        ChannelState memory state = existing(channelId);
        if (msg.sender != descriptor.payer) revert NotPayer();
        bool ready = state.closeRequestedAt != 0
            && block.timestamp >= uint256(state.closeRequestedAt) + CLOSE_GRACE_PERIOD;
        if (!ready) revert CloseNotReady();

        uint96 refund = state.deposit - state.settled;
        deleteChannel(channelId, descriptor.payer);
        if (refund != 0) pay(descriptor.token, descriptor.payer, refund);

        emit ChannelClosed(channelId, descriptor.payer, descriptor.payee, state.settled, refund);
    }

    // ---- views ----

    function getChannel(ChannelDescriptor calldata descriptor) external view returns (Channel memory) {
        return Channel(descriptor, unpack(packedStates[idOf(descriptor)]));
    }

    function getChannelState(bytes32 channelId) external view returns (ChannelState memory) {
        return unpack(packedStates[channelId]);
    }

    function getChannelStatesBatch(bytes32[] calldata channelIds) external view returns (ChannelState[] memory states) {
        states = new ChannelState[](channelIds.length);
        for (uint256 i = 0; i < channelIds.length; i++) {
            states[i] = unpack(packedStates[channelIds[i]]);
        }
    }

    function computeChannelId(
        address payer,
        address payee,
        address operator,
        address token,
        bytes32 salt,
        address authorizedSigner,
        bytes32 expiringNonceHash
    ) public view returns (bytes32) {
        return keccak256(
            abi.encode(
                payer, payee, operator, token, salt, authorizedSigner, expiringNonceHash, address(this), block.chainid
            )
        );
    }

    function getVoucherDigest(bytes32 channelId, uint96 cumulativeAmount) public view returns (bytes32) {
        bytes32 structHash = keccak256(abi.encode(VOUCHER_TYPEHASH, channelId, cumulativeAmount));
        return keccak256(abi.encodePacked("\x19\x01", domainSeparator(), structHash));
    }

    function domainSeparator() public view returns (bytes32) {
        return keccak256(abi.encode(DOMAIN_TYPEHASH, NAME_HASH, VERSION_HASH, block.chainid, address(this)));
    }

    function storageCredits(address payer) external view returns (uint64) {
        return credits[payer];
    }

    // ---- internals ----

    function idOf(ChannelDescriptor calldata d) private view returns (bytes32) {
        return computeChannelId(d.payer, d.payee, d.operator, d.token, d.salt, d.authorizedSigner, d.expiringNonceHash);
    }

    /// The opening transaction's hash as seeded by the devnet front, or the
    /// simulation context inside an eth_call. Both slots are always read so a
    /// gas estimate costs what the real transaction will.
    function openingTransactionHash(
        address payer,
        address payee,
        address operator,
        address token,
        bytes32 salt,
        address authorizedSigner
    ) private view returns (bytes32 hash) {
        bytes32 seeded = openContext[keccak256(abi.encode(payer, payee, operator, token, salt, authorizedSigner))];
        bytes32 simulated = simulationContext;
        hash = simulated != bytes32(0) ? simulated : seeded;
        if (hash == bytes32(0)) revert ExpiringNonceHashNotSet();
    }

    function existing(bytes32 channelId) private view returns (ChannelState memory state) {
        state = unpack(packedStates[channelId]);
        // A live channel always holds a deposit; an empty slot is no channel.
        if (state.deposit == 0) revert ChannelNotFound();
    }

    function requirePayeeSide(ChannelDescriptor calldata d) private view {
        if (msg.sender != d.payee && (d.operator == address(0) || msg.sender != d.operator)) {
            revert NotPayeeOrOperator();
        }
    }

    function requireVoucher(
        ChannelDescriptor calldata d,
        bytes32 channelId,
        uint96 cumulativeAmount,
        bytes calldata signature
    ) private view {
        address expected = d.authorizedSigner == address(0) ? d.payer : d.authorizedSigner;
        if (recoverSecp256k1(getVoucherDigest(channelId, cumulativeAmount), signature) != expected) {
            revert InvalidSignature();
        }
    }

    /// TIP-1020's secp256k1 form: exactly 65 bytes r || s || v, v in {0, 1,
    /// 27, 28}, low s. Anything else (P256, WebAuthn, keychain wrappers,
    /// EIP-2098 compact) is refused here.
    function recoverSecp256k1(bytes32 digest, bytes calldata signature) private pure returns (address) {
        if (signature.length != 65) revert InvalidSignature();
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        if (v < 27) v += 27;
        if (v != 27 && v != 28) revert InvalidSignature();
        if (uint256(s) > MAX_LOW_S) revert InvalidSignature();
        address signer = ecrecover(digest, v, r, s);
        if (signer == address(0)) revert InvalidSignature();
        return signer;
    }

    /// The token's TIP-403 policy for the logical payer -> payee path. Uses
    /// the role-specific query where the chain has it (TIP-1015), else the
    /// plain one.
    function requireAuthorized(address token, address user, bytes4 roleQuery) private view {
        (bool ok, bytes memory out) = token.staticcall(abi.encodeCall(ITIP20Token.transferPolicyId, ()));
        if (!ok || out.length < 32) return;
        uint64 policyId = abi.decode(out, (uint64));
        (ok, out) = TIP403_REGISTRY.staticcall(abi.encodeWithSelector(roleQuery, policyId, user));
        if (!ok || out.length < 32) {
            (ok, out) = TIP403_REGISTRY.staticcall(abi.encodeCall(ITIP403Roles.isAuthorized, (policyId, user)));
            if (!ok || out.length < 32) return;
        }
        if (!abi.decode(out, (bool))) revert PolicyForbids();
    }

    function pull(address token, address from, uint96 amount) private {
        // The precompile moves funds without an allowance (TIP-1035); the
        // devnet grants this contract one instead.
        bool ok = ITIP20Token(token).transferFrom(from, address(this), amount);
        require(ok);
    }

    function pay(address token, address to, uint96 amount) private {
        bool ok = ITIP20Token(token).transfer(to, amount);
        require(ok);
    }

    function deleteChannel(bytes32 channelId, address payer) private {
        delete packedStates[channelId];
        // The freed slot becomes a credit the payer's next open reuses.
        credits[payer] += 1;
    }

    function spendCredit(address payer) private {
        uint64 available = credits[payer];
        if (available != 0) credits[payer] = available - 1;
    }

    function openedThisTx(bytes32 channelId) private view returns (bool opened) {
        bytes32 slot = keccak256(abi.encode(channelId, OPENED_THIS_TX));
        assembly {
            opened := tload(slot)
        }
    }

    function markOpenedThisTx(bytes32 channelId) private {
        bytes32 slot = keccak256(abi.encode(channelId, OPENED_THIS_TX));
        assembly {
            tstore(slot, 1)
        }
    }

    function pack(uint96 settled, uint96 deposit, uint32 closeRequestedAt) private pure returns (uint256) {
        return uint256(settled) | (uint256(deposit) << 96) | (uint256(closeRequestedAt) << 192);
    }

    function unpack(uint256 word) private pure returns (ChannelState memory) {
        return ChannelState(uint96(word), uint96(word >> 96), uint32(word >> 192));
    }

    function isTip20(address a) private pure returns (bool) {
        return uint160(a) >> 64 == TIP20_PREFIX;
    }

    function isVirtual(address a) private pure returns (bool) {
        return (uint160(a) >> 48) & ((1 << 80) - 1) == VIRTUAL_MAGIC;
    }
}

/// The TIP-403 registry queries `requireAuthorized` tries, most specific first.
interface ITIP403Roles {
    function isAuthorized(uint64 policyId, address user) external view returns (bool);
    function isAuthorizedSender(uint64 policyId, address user) external view returns (bool);
    function isAuthorizedRecipient(uint64 policyId, address user) external view returns (bool);
}
