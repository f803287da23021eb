// SPDX-License-Identifier: MIT
// A test stablecoin for local chains only: 6 decimals like USDT/USDC, and anyone may mint.
pragma solidity ^0.8.20;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

contract PagoTestToken is ERC20 {
    /// Mints `amountEach` to every holder (the deployer is holder 0 by convention): funding
    /// all dev accounts in the deploy transaction needs no follow-up transactions.
    constructor(
        string memory name_,
        string memory symbol_,
        address[] memory holders,
        uint256 amountEach
    ) ERC20(name_, symbol_) {
        for (uint256 i = 0; i < holders.length; i++) {
            _mint(holders[i], amountEach);
        }
    }

    function decimals() public pure override returns (uint8) {
        return 6;
    }

    /// Open faucet: a dev chain's test token has no value to protect.
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }
}
