// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

/// Tollgate's escrow for Tempo `session` payments (protocol v1), written from
/// draft-tempo-session-00 and the TempoStreamChannel ABI: same functions,
/// events, errors and EIP-712 domain ("Tempo Stream Channel", version "1").
/// For local development chains; not audited.

interface ITIP20 {
    function transfer(address to, uint256 amount) external returns (bool);
    function transferFrom(address from, address to, uint256 amount) external returns (bool);
}

contract TempoStreamChannel {
    struct Channel {
        bool finalized;
        uint64 closeRequestedAt;
        address payer;
        address payee;
        address token;
        address authorizedSigner;
        uint128 deposit;
        uint128 settled;
    }

    uint64 public constant CLOSE_GRACE_PERIOD = 15 minutes;
    bytes32 public constant VOUCHER_TYPEHASH =
        keccak256("Voucher(bytes32 channelId,uint128 cumulativeAmount)");

    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 private constant NAME_HASH = keccak256("Tempo Stream Channel");
    bytes32 private constant VERSION_HASH = keccak256("1");
    /// secp256k1n / 2: signatures with a larger `s` are malleable.
    uint256 private constant MAX_LOW_S =
        0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    mapping(bytes32 => Channel) public channels;

    event ChannelOpened(
        bytes32 indexed channelId,
        address indexed payer,
        address indexed payee,
        address token,
        address authorizedSigner,
        bytes32 salt,
        uint256 deposit
    );
    event TopUp(
        bytes32 indexed channelId,
        address indexed payer,
        address indexed payee,
        uint256 additionalDeposit,
        uint256 newDeposit
    );
    event Settled(
        bytes32 indexed channelId,
        address indexed payer,
        address indexed payee,
        uint256 cumulativeAmount,
        uint256 deltaPaid,
        uint256 newSettled
    );
    event CloseRequested(
        bytes32 indexed channelId, address indexed payer, address indexed payee, uint256 closeGraceEnd
    );
    event CloseRequestCancelled(bytes32 indexed channelId, address indexed payer, address indexed payee);
    event ChannelClosed(
        bytes32 indexed channelId,
        address indexed payer,
        address indexed payee,
        uint256 settledToPayee,
        uint256 refundedToPayer
    );
    event ChannelExpired(bytes32 indexed channelId, address indexed payer, address indexed payee);

    error AmountExceedsDeposit();
    error AmountNotIncreasing();
    error ChannelAlreadyExists();
    error ChannelFinalized();
    error ChannelNotFound();
    error CloseNotReady();
    error DepositOverflow();
    error InvalidPayee();
    error InvalidSignature();
    error NotPayee();
    error NotPayer();
    error TransferFailed();

    // ------------------------------------------------------------ payer side

    function open(address payee, address token, uint128 deposit, bytes32 salt, address authorizedSigner)
        external
        returns (bytes32 channelId)
    {
        if (payee == address(0)) revert InvalidPayee();
        channelId = computeChannelId(msg.sender, payee, token, salt, authorizedSigner);
        if (channels[channelId].payer != address(0)) revert ChannelAlreadyExists();
        channels[channelId] = Channel({
            finalized: false,
            closeRequestedAt: 0,
            payer: msg.sender,
            payee: payee,
            token: token,
            authorizedSigner: authorizedSigner,
            deposit: deposit,
            settled: 0
        });
        _pull(token, msg.sender, deposit);
        emit ChannelOpened(channelId, msg.sender, payee, token, authorizedSigner, salt, deposit);
    }

    /// Adds to the deposit; also cancels a pending close request.
    function topUp(bytes32 channelId, uint256 additionalDeposit) external {
        Channel storage ch = _payerChannel(channelId);
        if (additionalDeposit > 0) {
            if (additionalDeposit > type(uint128).max - ch.deposit) revert DepositOverflow();
            ch.deposit += uint128(additionalDeposit);
            _pull(ch.token, msg.sender, additionalDeposit);
        }
        if (ch.closeRequestedAt != 0) {
            ch.closeRequestedAt = 0;
            emit CloseRequestCancelled(channelId, ch.payer, ch.payee);
        }
        emit TopUp(channelId, ch.payer, ch.payee, additionalDeposit, ch.deposit);
    }

    /// Starts the grace period after which the payer may withdraw.
    function requestClose(bytes32 channelId) external {
        Channel storage ch = _payerChannel(channelId);
        if (ch.closeRequestedAt == 0) {
            ch.closeRequestedAt = uint64(block.timestamp);
            emit CloseRequested(channelId, ch.payer, ch.payee, block.timestamp + CLOSE_GRACE_PERIOD);
        }
    }

    /// After the grace period: refunds what was not settled and finalizes.
    function withdraw(bytes32 channelId) external {
        Channel storage ch = _payerChannel(channelId);
        if (ch.closeRequestedAt == 0 || block.timestamp < uint256(ch.closeRequestedAt) + CLOSE_GRACE_PERIOD) {
            revert CloseNotReady();
        }
        uint128 refund = ch.deposit - ch.settled;
        ch.finalized = true;
        _push(ch.token, ch.payer, refund);
        emit ChannelExpired(channelId, ch.payer, ch.payee);
        emit ChannelClosed(channelId, ch.payer, ch.payee, ch.settled, refund);
    }

    // ------------------------------------------------------------ payee side

    /// Pays out the voucher's increase over what was settled.
    function settle(bytes32 channelId, uint128 cumulativeAmount, bytes calldata signature) external {
        Channel storage ch = _payeeChannel(channelId);
        if (cumulativeAmount > ch.deposit) revert AmountExceedsDeposit();
        if (cumulativeAmount <= ch.settled) revert AmountNotIncreasing();
        _requireVoucherSigner(ch, channelId, cumulativeAmount, signature);
        uint128 delta = cumulativeAmount - ch.settled;
        ch.settled = cumulativeAmount;
        _push(ch.token, ch.payee, delta);
        emit Settled(channelId, ch.payer, ch.payee, cumulativeAmount, delta, cumulativeAmount);
    }

    /// Settles (when the voucher is above what was settled), refunds the
    /// rest to the payer and finalizes.
    function close(bytes32 channelId, uint128 cumulativeAmount, bytes calldata signature) external {
        Channel storage ch = _payeeChannel(channelId);
        uint128 delta = 0;
        if (cumulativeAmount > ch.settled) {
            if (cumulativeAmount > ch.deposit) revert AmountExceedsDeposit();
            _requireVoucherSigner(ch, channelId, cumulativeAmount, signature);
            delta = cumulativeAmount - ch.settled;
            ch.settled = cumulativeAmount;
        }
        uint128 refund = ch.deposit - ch.settled;
        ch.finalized = true;
        _push(ch.token, ch.payee, delta);
        _push(ch.token, ch.payer, refund);
        emit ChannelClosed(channelId, ch.payer, ch.payee, ch.settled, refund);
    }

    // ------------------------------------------------------------ views

    function computeChannelId(address payer, address payee, address token, bytes32 salt, address authorizedSigner)
        public
        view
        returns (bytes32)
    {
        return keccak256(abi.encode(payer, payee, token, salt, authorizedSigner, address(this), block.chainid));
    }

    function getChannel(bytes32 channelId) external view returns (Channel memory) {
        return channels[channelId];
    }

    function getChannelsBatch(bytes32[] calldata channelIds) external view returns (Channel[] memory channelStates) {
        channelStates = new Channel[](channelIds.length);
        for (uint256 i = 0; i < channelIds.length; i++) {
            channelStates[i] = channels[channelIds[i]];
        }
    }

    function domainSeparator() public view returns (bytes32) {
        return keccak256(abi.encode(DOMAIN_TYPEHASH, NAME_HASH, VERSION_HASH, block.chainid, address(this)));
    }

    function getVoucherDigest(bytes32 channelId, uint128 cumulativeAmount) public view returns (bytes32) {
        bytes32 structHash = keccak256(abi.encode(VOUCHER_TYPEHASH, channelId, cumulativeAmount));
        return keccak256(abi.encodePacked("\x19\x01", domainSeparator(), structHash));
    }

    /// EIP-5267.
    function eip712Domain()
        external
        view
        returns (
            bytes1 fields,
            string memory name,
            string memory version,
            uint256 chainId,
            address verifyingContract,
            bytes32 salt,
            uint256[] memory extensions
        )
    {
        return (hex"0f", "Tempo Stream Channel", "1", block.chainid, address(this), bytes32(0), new uint256[](0));
    }

    // ------------------------------------------------------------ internals

    function _payerChannel(bytes32 channelId) private view returns (Channel storage ch) {
        ch = channels[channelId];
        if (ch.payer == address(0)) revert ChannelNotFound();
        if (msg.sender != ch.payer) revert NotPayer();
        if (ch.finalized) revert ChannelFinalized();
    }

    function _payeeChannel(bytes32 channelId) private view returns (Channel storage ch) {
        ch = channels[channelId];
        if (ch.payer == address(0)) revert ChannelNotFound();
        if (msg.sender != ch.payee) revert NotPayee();
        if (ch.finalized) revert ChannelFinalized();
    }

    /// The voucher must be signed by the authorized signer (the payer when
    /// none was named), as a 65-byte (v = 27/28) or 64-byte EIP-2098
    /// signature with a low `s`.
    function _requireVoucherSigner(Channel storage ch, bytes32 channelId, uint128 amount, bytes calldata signature)
        private
        view
    {
        address expected = ch.authorizedSigner != address(0) ? ch.authorizedSigner : ch.payer;
        if (_recover(getVoucherDigest(channelId, amount), signature) != expected) revert InvalidSignature();
    }

    function _recover(bytes32 digest, bytes calldata signature) private pure returns (address signer) {
        bytes32 r;
        bytes32 s;
        uint8 v;
        if (signature.length == 65) {
            r = bytes32(signature[0:32]);
            s = bytes32(signature[32:64]);
            v = uint8(signature[64]);
        } else if (signature.length == 64) {
            r = bytes32(signature[0:32]);
            bytes32 vs = bytes32(signature[32:64]);
            s = vs & bytes32(uint256(type(uint256).max >> 1));
            v = uint8(uint256(vs) >> 255) + 27;
        } else {
            revert InvalidSignature();
        }
        if (v != 27 && v != 28) revert InvalidSignature();
        if (uint256(s) > MAX_LOW_S) revert InvalidSignature();
        signer = ecrecover(digest, v, r, s);
        if (signer == address(0)) revert InvalidSignature();
    }

    function _pull(address token, address from, uint256 amount) private {
        if (!ITIP20(token).transferFrom(from, address(this), amount)) revert TransferFailed();
    }

    function _push(address token, address to, uint256 amount) private {
        if (amount > 0 && !ITIP20(token).transfer(to, amount)) revert TransferFailed();
    }
}
